//! TEMPORARY stand-in for `swappo_messaging::{Publisher, PublisherOptions}` (being written in
//! parallel against /work/messaging-api.md), so the relay can be exercised against the real
//! broker now. Deleted when the real publisher lands.
#![allow(missing_docs)]
use futures::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use swappo_messaging::{BrokerConfig, NotificationEvent};
use tokio::sync::Mutex;

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

pub struct Publisher {
    config: BrokerConfig,
    options: PublisherOptions,
    link: Mutex<Option<(Connection, Channel)>>,
    connected: std::sync::atomic::AtomicBool,
}

async fn open(config: &BrokerConfig) -> Result<(Connection, Channel), lapin::Error> {
    let conn =
        Connection::connect_uri(config.uri().clone(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

impl Publisher {
    pub async fn connect(config: BrokerConfig, options: PublisherOptions) -> Result<Self, String> {
        let link = open(&config).await.map_err(|e| e.to_string())?;
        Ok(Self {
            config,
            options,
            link: Mutex::new(Some(link)),
            connected: true.into(),
        })
    }

    pub async fn publish_all(&self, events: &[NotificationEvent]) -> Vec<Result<(), String>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut link = self.link.lock().await;
        if link
            .as_ref()
            .is_none_or(|(c, ch)| !c.status().connected() || !ch.status().connected())
        {
            match open(&self.config).await {
                Ok(l) => *link = Some(l),
                Err(e) => {
                    *link = None;
                    self.connected.store(false, Relaxed);
                    return events.iter().map(|_| Err(e.to_string())).collect();
                }
            }
        }
        self.connected.store(true, Relaxed);
        let (_, ch) = link.as_ref().expect("a link");
        let confirms = join_all(events.iter().map(|e| async move {
            let props = BasicProperties::default()
                .with_message_id(e.id.to_string().into())
                .with_content_type("application/json".into())
                .with_type(e.event_type.as_str().into())
                .with_delivery_mode(2);
            let pending = ch
                .basic_publish(
                    "".into(),
                    self.options.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &e.to_json(),
                    props,
                )
                .await
                .map_err(|e| e.to_string())?;
            match pending.await {
                Ok(c) if c.is_ack() => Ok(()),
                Ok(_) => Err("nacked".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }))
        .await;
        if confirms.iter().any(|r| r.is_err()) {
            *link = None;
            self.connected.store(false, Relaxed);
        }
        confirms
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn close(&self) {
        if let Some((c, _)) = self.link.lock().await.take() {
            let _ = c.close(200, "bye".into()).await;
        }
    }
}
