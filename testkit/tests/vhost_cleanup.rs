//! A test's vhost is removed when it is dropped, whatever runtime the test uses.
use swappo_testkit::{Management, TestVhost};

#[tokio::test] // current-thread: the drop must not need this (blocked) runtime
async fn a_vhost_is_removed_when_dropped_on_a_current_thread_runtime() {
    let vhost = TestVhost::new("drop-").await;
    let name = vhost.name().to_string();
    let management = Management::from_env();
    // The test's own client has a pooled connection on this runtime, as real tests do.
    assert!(vhost.management().vhost_exists(&name).await.unwrap());
    drop(vhost);
    assert!(
        !management.vhost_exists(&name).await.unwrap(),
        "vhost {name} is gone"
    );
}
