//! The pruning methods: how many weights each layer keeps ([`quota`]) and
//! which ones ([`random`]: RPI and MiCA; [`scored`]: SNIP, GraSP, SynFlow,
//! SNIP-it; [`magnitude`]: magnitude and LAMP; [`neuron`]: structured
//! pruning and OSSuM; [`npb`]: node-path balancing), cut into masks by [`select`] and dispatched by
//! [`prune`], over the layers [`selection`] chooses (`--include`/`--exclude`).

pub mod magnitude;
pub mod neuron;
pub mod nm;
pub mod npb;
pub mod prune;
pub mod quota;
pub mod random;
pub mod scored;
pub mod select;
pub mod selection;
