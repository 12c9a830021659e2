//! config-redeploy benchmark: deployments and latency for realistic bursts of events, with the
//! real binary against moto, beside two references measured in the same run: a hello-world
//! function (latency) and the usual "UpdateService on every event" (deployments).
//!
//! ```sh
//! cargo build --bin config-redeploy --bin hello-world
//! WIKIOPS_BIN_DIR=target/debug cargo run -p config-redeploy --example bench
//! ```
//!
//! Prints a markdown table.

use std::time::Instant;

use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};
use wikiops_tests::measure::Samples;
use wikiops_tests::{Lambda, Moto, events};

const BUCKET: &str = "wiki-config";
const FILES: usize = 10;
/// Each event delivered this many times (at-least-once delivery); FILES × DELIVERIES is a multiple of 4.
const DELIVERIES: usize = 2;
const RUNS: usize = 20;

fn env(moto: &Moto) -> Vec<(String, String)> {
    let mut env = moto.env();
    env.extend([
        ("CONFIG_BUCKET".to_string(), BUCKET.to_string()),
        ("ECS_CLUSTER".to_string(), "wiki".to_string()),
        ("ECS_SERVICE".to_string(), "web".to_string()),
    ]);
    env
}

async fn primary(ecs: &aws_sdk_ecs::Client) -> String {
    shared::ecs::describe(ecs, "wiki", "web")
        .await
        .expect("describe")
        .primary()
        .expect("primary")
        .id
        .clone()
}

async fn put(s3: &aws_sdk_s3::Client, key: &str, body: String) -> String {
    s3.put_object()
        .bucket(BUCKET)
        .key(key)
        .body(body.into_bytes().into())
        .send()
        .await
        .expect("put")
        .version_id()
        .unwrap_or("null")
        .to_string()
}

fn s3_event(key: &str, version: &str) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut e = events::load_with(
        "config-redeploy-s3-put",
        &[
            ("wiki-config-123456789012", BUCKET),
            ("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", version),
            ("2026-11-29T07:00:00.123Z", &now),
        ],
    );
    e["Records"][0]["s3"]["object"]["key"] = json!(key);
    e
}

fn bridge_event(key: &str, version: &str) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut e = events::load_with(
        "config-redeploy-eventbridge-object-created",
        &[
            ("wiki-config-123456789012", BUCKET),
            ("3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY", version),
            ("2026-11-29T07:00:00Z", &now),
        ],
    );
    e["detail"]["object"]["key"] = json!(key);
    e
}

fn deployments(outs: &[Value]) -> usize {
    outs.iter()
        .map(|o| o["redeployed"].as_array().map_or(0, Vec::len))
        .sum()
}

#[tokio::main]
async fn main() {
    let moto = Moto::start().await;
    moto.ecs_service("wiki", "web", "wiki-web").await;
    let s3 = moto.s3().await;
    let ecs = moto.ecs().await;
    moto.versioned_bucket(BUCKET).await.expect("bucket");

    let hello = Lambda::start("hello-world", Vec::<(String, String)>::new()).await;
    let lambda = Lambda::start("config-redeploy", env(&moto)).await;
    let mut rows = Vec::new();

    // 1. `aws s3 sync` of FILES files, S3 notifications delivered DELIVERIES times, in turn.
    let mut outs = Vec::new();
    let before = primary(&ecs).await;
    let mut batch = Vec::new();
    for i in 0..FILES {
        let key = format!("extensions/Ext{i}.php");
        let v = put(&s3, &key, format!("<?php\n// {i}\n")).await;
        batch.push(s3_event(&key, &v));
    }
    for _ in 0..DELIVERIES {
        for e in &batch {
            outs.push(lambda.invoke(e.clone()).await.expect("invoke"));
        }
    }
    assert_ne!(primary(&ecs).await, before);
    rows.push((
        format!("sync of {FILES} files, S3 notifications x{DELIVERIES}, one instance"),
        FILES * DELIVERIES,
        deployments(&outs),
    ));

    // 2. The same over EventBridge (whole-second times), four instances in parallel.
    let instances = [
        Lambda::start("config-redeploy", env(&moto)).await,
        Lambda::start("config-redeploy", env(&moto)).await,
        Lambda::start("config-redeploy", env(&moto)).await,
        Lambda::start("config-redeploy", env(&moto)).await,
    ];
    let mut batch = Vec::new();
    for i in 0..FILES {
        let key = format!("extensions/Ext{i}.php");
        let v = put(&s3, &key, format!("<?php\n// v2 {i}\n")).await;
        for _ in 0..DELIVERIES {
            batch.push(bridge_event(&key, &v));
        }
    }
    let mut outs = Vec::new();
    for c in batch.chunks_exact(4) {
        let (a, b, d, e) = tokio::join!(
            instances[0].invoke(c[0].clone()),
            instances[1].invoke(c[1].clone()),
            instances[2].invoke(c[2].clone()),
            instances[3].invoke(c[3].clone()),
        );
        for o in [a, b, d, e] {
            outs.push(o.expect("invoke"));
        }
    }
    rows.push((
        format!("sync of {FILES} files, EventBridge x{DELIVERIES}, 4 instances in parallel"),
        FILES * DELIVERIES,
        deployments(&outs),
    ));

    // Latency: a new change (full check: list, .php headers, ledger, deploy), a duplicate
    // (one DescribeServices), against hello-world.
    let mut h = Samples::default();
    for _ in 0..RUNS {
        let t = Instant::now();
        hello.invoke(json!({"ping": 1})).await.expect("hello");
        h.push_ms(t.elapsed());
    }
    let (mut change, mut dup) = (Samples::default(), Samples::default());
    for i in 0..RUNS {
        let v = put(&s3, "LocalSettings.php", format!("<?php\n$x = {i};\n")).await;
        let e = s3_event("LocalSettings.php", &v);
        let t = Instant::now();
        let out = lambda.invoke(e.clone()).await.expect("invoke");
        change.push_ms(t.elapsed());
        assert_eq!(deployments(&[out]), 1);
        let t = Instant::now();
        let out = lambda.invoke(e).await.expect("invoke");
        dup.push_ms(t.elapsed());
        assert_eq!(deployments(&[out]), 0);
    }

    println!(
        "| burst | events | deployments (UpdateService per event) | deployments (config-redeploy) |"
    );
    println!("|---|---:|---:|---:|");
    for (what, events, deployed) in &rows {
        println!("| {what} | {events} | {events} | {deployed} |");
    }
    println!();
    println!(
        "| invocation ({} runs, {FILES} other .php files) | median ms (min–max) | × hello-world |",
        RUNS
    );
    println!("|---|---:|---:|");
    println!("| hello-world | {} | 1.0 |", h.show(2));
    for (what, s) in [
        ("new change (check, deploy, ledger)", &change),
        ("duplicate", &dup),
    ] {
        println!(
            "| {what} | {} | {:.1} |",
            s.show(2),
            s.median() / h.median()
        );
    }
}
