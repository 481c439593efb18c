//! A Hugging Face `config.json`, read by key with errors that name the key.
//!
//! Families spell the same fact differently (`hidden_size` / `n_embd`,
//! `rope_theta` at the top level in older files, inside `rope_parameters` in
//! transformers 5), so lookups take the alternatives in order.
//!
//! ```
//! use maskforge::io::hf::config::Config;
//! let c = Config::parse(r#"{"model_type": "gpt2", "n_embd": 32}"#, "config.json").unwrap();
//! assert_eq!(c.usize(&["hidden_size", "n_embd"]).unwrap(), 32);
//! assert!(c.usize(&["num_hidden_layers"]).unwrap_err().to_string().contains("num_hidden_layers"));
//! ```

use serde_json::Value;

use crate::error::{Error, Result};

/// The parsed file and where it came from (for messages).
#[derive(Clone, Debug)]
pub struct Config {
    json: Value,
    origin: String,
}

impl Config {
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let json: Value = serde_json::from_str(text)
            .map_err(|e| Error::input(format!("{origin}: not valid JSON: {e}")))?;
        if !json.is_object() {
            return Err(Error::input(format!("{origin}: expected a JSON object")));
        }
        Ok(Self {
            json,
            origin: origin.to_string(),
        })
    }

    /// The first of `keys` present (and not null).
    pub fn get(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter()
            .filter_map(|k| self.json.get(*k))
            .find(|v| !v.is_null())
    }

    fn missing(&self, keys: &[&str]) -> Error {
        Error::input(format!(
            "{}: '{}' is missing",
            self.origin,
            keys.join("' or '")
        ))
    }

    fn wrong(&self, keys: &[&str], what: &str) -> Error {
        Error::input(format!("{}: '{}' is not {what}", self.origin, keys[0]))
    }

    pub fn usize(&self, keys: &[&str]) -> Result<usize> {
        self.opt_usize(keys)?.ok_or_else(|| self.missing(keys))
    }

    pub fn opt_usize(&self, keys: &[&str]) -> Result<Option<usize>> {
        self.get(keys)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.wrong(keys, "a non-negative integer"))
            })
            .transpose()
    }

    pub fn opt_f64(&self, keys: &[&str]) -> Result<Option<f64>> {
        self.get(keys)
            .map(|v| v.as_f64().ok_or_else(|| self.wrong(keys, "a number")))
            .transpose()
    }

    pub fn f64_or(&self, keys: &[&str], default: f64) -> Result<f64> {
        Ok(self.opt_f64(keys)?.unwrap_or(default))
    }

    pub fn opt_bool(&self, keys: &[&str]) -> Result<Option<bool>> {
        self.get(keys)
            .map(|v| v.as_bool().ok_or_else(|| self.wrong(keys, "true or false")))
            .transpose()
    }

    pub fn opt_str(&self, keys: &[&str]) -> Result<Option<&str>> {
        self.get(keys)
            .map(|v| v.as_str().ok_or_else(|| self.wrong(keys, "a string")))
            .transpose()
    }

    pub fn str_or<'a>(&'a self, keys: &[&str], default: &'a str) -> Result<&'a str> {
        Ok(self.opt_str(keys)?.unwrap_or(default))
    }

    /// `model_type`, the key that picks the family.
    pub fn model_type(&self) -> Result<&str> {
        self.opt_str(&["model_type"])?
            .ok_or_else(|| self.missing(&["model_type"]))
    }

    /// The first entry of `architectures` (e.g. `LlamaForCausalLM`), if any.
    pub fn architecture(&self) -> Option<&str> {
        self.json
            .get("architectures")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
    }

    /// A nested object (e.g. `rope_parameters`) as a config of its own.
    pub fn section(&self, keys: &[&str]) -> Option<Config> {
        self.get(keys).filter(|v| v.is_object()).map(|v| Config {
            json: v.clone(),
            origin: format!("{} ({})", self.origin, keys[0]),
        })
    }

    /// A list of strings (e.g. `layer_types`).
    pub fn opt_strings(&self, keys: &[&str]) -> Result<Option<Vec<String>>> {
        self.get(keys)
            .map(|v| {
                v.as_array()
                    .and_then(|a| a.iter().map(|s| s.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| self.wrong(keys, "a list of strings"))
            })
            .transpose()
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// An input error about this file.
    pub fn error(&self, msg: impl std::fmt::Display) -> Error {
        Error::input(format!("{}: {msg}", self.origin))
    }
}
