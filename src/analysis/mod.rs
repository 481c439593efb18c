//! What a mask does to a network: which kept weights are active
//! ([`effective`], on per-position [`liveness`] and, for the ops that
//! connect elements across channels, the element rules of [`elements`]),
//! how many input -> output paths and nodes survive ([`paths`]), and the
//! per-layer [`audit`] built from both. [`oracle`] is the independent float definition the tests
//! check the graph method against.

pub mod audit;
pub mod effective;
pub mod elements;
pub mod factors;
pub mod liveness;
pub mod oracle;
pub mod paths;
