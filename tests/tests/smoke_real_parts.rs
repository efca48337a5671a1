//! Smoke tests that prove each real part of the local environment answers: the broker
//! (publish with confirms, consume back) and the database (write a row, read it back).
use futures::StreamExt;
use lapin::{BasicProperties, Connection, ConnectionProperties, options::*, types::FieldTable};
use sqlx::{Connection as _, PgConnection, Row};
use swappo_testkit::{TestDb, TestVhost};

#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_persistent_message_is_consumed_back_from_the_real_broker() {
    let vhost = TestVhost::new("smoke-").await;
    let conn = Connection::connect(vhost.amqp_url(), ConnectionProperties::default())
        .await
        .expect("connect to the test vhost");
    let channel = conn.create_channel().await.unwrap();
    channel
        .queue_declare(
            "smoke".into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let payload = format!("hello {}", vhost.name());
    let confirm = channel
        .basic_publish(
            "".into(),
            "smoke".into(),
            BasicPublishOptions::default(),
            payload.as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirm.is_ack(), "the broker confirmed the message");

    // The management API's counts are refreshed on the broker's statistics interval.
    let mut ready = None;
    for _ in 0..30 {
        ready = vhost
            .management()
            .queue(vhost.name(), "smoke")
            .await
            .unwrap()
            .map(|q| q.messages_ready);
        if ready == Some(1) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(
        ready,
        Some(1),
        "the management API sees the message waiting in the queue"
    );

    let mut consumer = channel
        .basic_consume(
            "smoke".into(),
            "smoke-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next())
        .await
        .expect("a delivery within 10 s")
        .expect("the consumer stream is open")
        .expect("a delivery, not an error");
    assert_eq!(delivery.data, payload.as_bytes());
    assert_eq!(delivery.properties.delivery_mode(), &Some(2));
    delivery.ack(BasicAckOptions::default()).await.unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn a_row_written_to_the_real_database_is_read_back() {
    let db = TestDb::new("smoke_").await;
    let mut conn = PgConnection::connect(db.url())
        .await
        .expect("connect to the test database");
    sqlx::query("CREATE TABLE smoke (id BIGSERIAL PRIMARY KEY, note TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    let id: i64 = sqlx::query_scalar("INSERT INTO smoke (note) VALUES ($1) RETURNING id")
        .bind("written")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let row = sqlx::query("SELECT note FROM smoke WHERE id = $1")
        .bind(id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("note"), "written");
    conn.close().await.unwrap();
}
