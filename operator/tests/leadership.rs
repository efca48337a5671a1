//! Losing the leader Lease mid-pass, on the local control plane: the operator (a process)
//! writes nothing after the loss, although a reconcile was in flight.
//!
//! The reconcile is held deterministically: the broker address points at a listener that
//! accepts the AMQP connection and never answers, so the reconcile waits in its login (for
//! the AMQP timeout, longer than the test needs). The Lease is then given to another holder;
//! the listener is closed only after the operator has exited or logged the loss, so that a
//! reconcile still running would go on to write the status and its Events.
mod common;

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use swappo_operator::crd::SwappoMessaging;
use swappo_operator::fixtures::TestExt;
use swappo_testkit::{TestNamespace, eventually};
use tokio::net::TcpListener;

/// Events about `name` and resourceVersion of the resource: what the operator wrote.
async fn written(ns: &TestNamespace, name: &str) -> (String, Vec<String>) {
    let sm = ns.api::<SwappoMessaging>().get(name).await.unwrap();
    let events = ns
        .api::<Event>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.uid.clone()) == sm.uid())
        .map(|e| {
            format!(
                "{:?} {:?} x{:?}",
                e.reason,
                e.note,
                e.series.map(|s| s.count)
            )
        })
        .collect();
    (sm.resource_version().unwrap(), events)
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_mid_pass_writes_nothing_after_the_loss() {
    let Some(client) = cluster().await else {
        return;
    };
    install_crd(&client).await;
    let ns = TestNamespace::new("op-loss-").await;
    login_secret(&ns).await;
    // Accepts AMQP connections and never answers: the login waits.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = black_hole.local_addr().unwrap().to_string();
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::channel(16);
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = black_hole.accept().await {
            held.push(socket);
            let _ = accepted_tx.send(()).await;
        }
    });
    let args = [
        "--namespace",
        ns.name(),
        "--lease-namespace",
        ns.name(),
        "--lease-duration-seconds",
        "4",
        "--broker-address-override",
        &address,
        // Far longer than the test needs: the reconcile stays in its login until the listener
        // closes.
        "--amqp-timeout-seconds",
        "300",
    ];
    let mut a = Process::spawn("operator-a", "info", &args);
    eventually("operator-a to lead", WAIT, || async {
        let lease = Api::<Lease>::namespaced(client.clone(), ns.name())
            .get_opt("swappo-operator")
            .await
            .ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("operator-a")).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", a.log()));

    let sm = SwappoMessaging::new_in("dev", ns.name())
        .with_credentials_secret("broker-login")
        .with_external("127.0.0.1", false);
    ns.api::<SwappoMessaging>()
        .create(&PostParams::default(), &sm)
        .await
        .unwrap();
    // The reconcile is in its login now.
    tokio::time::timeout(WAIT, accepted.recv())
        .await
        .unwrap_or_else(|_| panic!("no AMQP connection; log:\n{}", a.log()));
    let before = written(&ns, "dev").await;

    // Another replica holds the Lease now.
    let patch = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now()
        ),
    }});
    Api::<Lease>::namespaced(client.clone(), ns.name())
        .patch(
            "swappo-operator",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    // The operator notices (it logs the loss, or has already exited)...
    eventually("operator-a to notice the loss", WAIT, || async {
        a.log().contains("lost the leader lease").then_some(())
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: a reconcile in flight kept it running with its Lease taken; log:\n{}",
            a.log()
        )
    });
    // ...and only then the login fails: a reconcile still running would write its status.
    holder.abort();
    let _ = holder.await;
    let status = a
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("still running; log:\n{}", a.log()));
    assert!(
        !status.success(),
        "a leader that lost its lease must not exit 0"
    );
    // Exited: everything it sent has reached the API server.
    let after = written(&ns, "dev").await;
    assert_eq!(
        after,
        before,
        "writes after the loss (resourceVersion, Events); log:\n{}",
        a.log()
    );
}
