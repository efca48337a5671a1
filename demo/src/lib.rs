//! `make demo`: the operator and both services run as local processes against the local
//! control plane, broker and database; a load driver makes trade offers, a live view shows
//! the queue, the scaling and the counts, and a final account proves nothing was lost.
//!
//! Pure parts (tested without I/O): [`plan`] (the load over time), [`summary`] (the account),
//! [`supervise::wanted`] (local consumers per replica), [`view`] (the table). I/O at the
//! edges: [`procs`], [`broker`], [`observe`], [`load`], [`run`].
#![forbid(unsafe_code)]

pub mod broker;
pub mod config;
pub mod load;
pub mod observe;
pub mod plan;
pub mod procs;
pub mod run;
pub mod summary;
pub mod supervise;
pub mod view;
