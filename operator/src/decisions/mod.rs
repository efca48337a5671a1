//! The operator's pure decisions: functions of what was observed, with no Kubernetes or broker
//! I/O, each tested with tables. The status and its conditions ([`status`]), the consumers'
//! replicas ([`autoscale`]), who may scale a consumer Deployment ([`claims`]), which ReplicaSets are stale ([`replicasets`]), whether an owned
//! object needs applying ([`diff`]), the queues' verdict ([`queues`]) and the leader Lease
//! ([`lease`]).
pub mod autoscale;
pub mod claims;
pub mod diff;
pub mod lease;
pub mod queues;
pub mod replicasets;
pub mod status;
