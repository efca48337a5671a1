//! The order a user sees per offer: every event of one offer carries an `occurred_at` from
//! the database's per-offer clock, strictly increasing in commit order, whatever clock the
//! replica that made the change has (the notifications list sorts by it, so arrival order
//! at the consumer does not matter).
mod common;

use chrono::{DateTime, Utc};
use common::Env;

/// `occurred_at` of the offer's events, in outbox (commit) order, with their types.
async fn stamps(env: &Env, offer_id: i64) -> Vec<(String, DateTime<Utc>)> {
    sqlx::query_as::<_, (String, String)>(
        "SELECT payload->>'type', payload->>'occurred_at' FROM outbox \
         WHERE (payload->>'related_offer_id')::bigint = $1 ORDER BY id",
    )
    .bind(offer_id)
    .fetch_all(&env.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(t, at)| (t, at.parse().expect("RFC 3339")))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_one_offer_are_stamped_in_commit_order_by_the_database_clock() {
    let env = Env::start().await;
    let id = env.api.create("alice", "bob", &[1], &[2]).await;
    env.api.must_patch(id, "bob", "accepted").await;
    // A replica whose clock runs an hour ahead stamped the last event: the database's clock
    // row for the offer says so.
    sqlx::query(
        "UPDATE offer_event_clock SET last_at = now() + interval '1 hour' WHERE offer_id = $1",
    )
    .bind(id)
    .execute(&env.pool)
    .await
    .unwrap();
    let ahead: DateTime<Utc> =
        sqlx::query_scalar("SELECT last_at FROM offer_event_clock WHERE offer_id = $1")
            .bind(id)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    env.api.must_patch(id, "alice", "completed").await;

    let got = stamps(&env, id).await;
    let types: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "trade_offer_received",
            "trade_offer_accepted",
            "trade_completed"
        ]
    );
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "strictly increasing per offer: {got:?}"
    );
    assert!(
        got[2].1 > ahead,
        "the next event sorts after the one stamped ahead, never before: {got:?}"
    );
    env.instance.stop().await;
}
