//! `make demo`: the operator, its broker and both services run as pods on the local
//! cluster's real node, installed with helm by `scripts/demo.sh`; this driver makes trade
//! offers, shows the live view (pods included), drills real outages and proves by event id
//! that nothing was lost.
//!
//! Pure parts (tested without I/O): [`plan`] (the load over time), [`drill`] (which fault next,
//! when it recovered), [`account`] (the comparison by event id), [`summary`] (the account),
//! [`view`] (the table), [`cluster::PodRow`] (a pod's row). I/O at the edges: [`broker`],
//! [`cluster`], [`faults`], [`observe`], [`load`], [`run`].
#![forbid(unsafe_code)]

pub mod account;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod drill;
pub mod faults;
pub mod load;
pub mod observe;
pub mod plan;
pub mod run;
pub mod summary;
pub mod view;
