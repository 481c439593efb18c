//! Names for the values of options: one table per enum gives it `FromStr`,
//! `Display` and the list of its names, so that a front end (the command
//! line, a config file) parses and prints exactly what the library accepts,
//! and the library needs no argument-parsing crate.
//!
//! A name outside the table is [`Error::UnknownName`](crate::error::Error),
//! which lists the names that would have worked:
//!
//! ```
//! use maskforge::io::maskfile::MaskDType;
//! use maskforge::vocab::Named;
//! assert_eq!("u8".parse::<MaskDType>().unwrap(), MaskDType::U8);
//! assert_eq!(MaskDType::F32.to_string(), "f32");
//! assert_eq!(MaskDType::NAMES, &["bool", "u8", "f32"]);
//! let e = "int4".parse::<MaskDType>().unwrap_err();
//! assert_eq!(e.to_string(), "unknown mask dtype 'int4' (expected bool, u8, f32)");
//! ```

/// An enum whose values have names.
pub trait Named: std::str::FromStr<Err = crate::error::Error> + std::fmt::Display + Copy {
    /// Every name, in the order the table gives them.
    const NAMES: &'static [&'static str];
}

/// `named!(Type, "what it is" { Variant => "name", ... })`: implements
/// [`Named`], `FromStr` and `Display` from one table.
#[macro_export]
macro_rules! named {
    ($ty:ty, $what:literal { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::vocab::Named for $ty {
            const NAMES: &'static [&'static str] = &[$($name),+];
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $name),+
                })
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $crate::error::Error;

            fn from_str(s: &str) -> $crate::error::Result<Self> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err($crate::error::Error::UnknownName {
                        what: $what,
                        given: other.to_string(),
                        expected: <Self as $crate::vocab::Named>::NAMES,
                    }),
                }
            }
        }
    };
}
