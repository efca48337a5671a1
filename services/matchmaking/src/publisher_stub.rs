//! TEMPORARY stand-in for swappo_messaging::{Publisher, PublisherOptions} until it lands.
#![allow(missing_docs, dead_code)]
use swappo_messaging::{BrokerConfig, NotificationEvent};
#[derive(Clone, Debug, Default)]
pub struct PublisherOptions {
    pub routing_key: String,
}
impl PublisherOptions {
    pub fn for_queue(q: &str) -> Self {
        Self {
            routing_key: q.into(),
        }
    }
}
pub struct Publisher;
impl Publisher {
    pub async fn connect(_c: BrokerConfig, _o: PublisherOptions) -> Result<Self, String> {
        Err("stub".into())
    }
    pub async fn publish_all(&self, e: &[NotificationEvent]) -> Vec<Result<(), String>> {
        e.iter().map(|_| Err("stub".into())).collect()
    }
    pub fn is_connected(&self) -> bool {
        false
    }
    pub async fn close(&self) {}
}
