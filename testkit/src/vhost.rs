//! A vhost of its own for one test, removed (with its queues) when dropped.
use crate::{Management, block_on_cleanup, management_url, rabbitmq_url, unique_name};
use reqwest::Url;

/// A fresh vhost on the shared test broker. Queues declared in it are invisible to other
/// tests, and closing its connections simulates an outage for this test alone.
pub struct TestVhost {
    name: String,
    amqp_url: String,
    management: Management,
}

impl TestVhost {
    /// Creates a vhost named `<prefix><random>`; panics with the reason when the broker
    /// is not reachable (run `make testenv-deps`).
    pub async fn new(prefix: &str) -> Self {
        let name = unique_name(prefix);
        let management = Management::new(&management_url());
        management.create_vhost(&name).await.unwrap_or_else(|e| {
            panic!("cannot create test vhost {name}: {e} (is RabbitMQ up? run `make testenv-deps`)")
        });
        let mut url = Url::parse(&rabbitmq_url()).expect("RABBITMQ_URL is a URL");
        url.set_path(&format!("/{name}"));
        Self {
            name,
            amqp_url: url.to_string(),
            management,
        }
    }

    /// The vhost's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An AMQP URL that opens connections in this vhost.
    pub fn amqp_url(&self) -> &str {
        &self.amqp_url
    }

    /// The management API client, for counts and simulated outages.
    pub fn management(&self) -> &Management {
        &self.management
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        // A fresh client: a clone would share the test's connection pool, whose connections
        // belong to the test's runtime, which is blocked in this drop (a current-thread runtime
        // would deadlock).
        let name = self.name.clone();
        block_on_cleanup(async move {
            let management = Management::new(&management_url());
            if let Err(e) = management.delete_vhost(&name).await {
                eprintln!("testkit: could not delete vhost {name}: {e}");
            }
        });
    }
}
