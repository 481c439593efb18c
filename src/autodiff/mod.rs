//! Running the network and differentiating it: the candle [`executor`], the
//! reverse pass over the network's node list ([`backward`]), exact
//! Hessian-vector products ([`hvp`]), the batches
//! they run on ([`calibration`]), masked weights kept across passes
//! ([`masked_weights`]) and the CPU ops
//! with hand-written backward passes ([`ops`]).

pub mod backward;
pub mod calibration;
pub mod executor;
pub mod hvp;
pub mod masked_weights;
pub mod ops;
