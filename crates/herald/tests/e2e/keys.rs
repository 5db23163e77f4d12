//! History keys through a herald process: records sealed with a key that is
//! then removed (SIGHUP reload) are shredded — recovery answers
//! `recovered: false`, the metric counts them, the node keeps serving.

use std::time::Duration;

use serde_json::json;

use crate::support::{Client, Server};

const H1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const H2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

fn config(active: &str, keys: &[(&str, &str)]) -> String {
    let keys: Vec<String> = keys
        .iter()
        .map(|(id, key)| format!("{{ id = \"{id}\", key = \"{key}\" }}"))
        .collect();
    format!(
        "[channel.without_namespace]\nallow_subscribe_for_client = true\n\
         allow_publish_for_client = true\nallow_history_for_client = true\nhistory_size = 10\nhistory_ttl = \"60s\"\n\
         force_recovery = true\n\n\
         [history_encryption]\nactive = \"{active}\"\nkeys = [{}]\n",
        keys.join(", ")
    )
}

async fn reload(server: &Server, active: &str, keys: &[(&str, &str)], reloads: usize) {
    let text = std::fs::read_to_string(server.config_path()).unwrap();
    let start = text.find("[channel.without_namespace]").unwrap();
    std::fs::write(
        server.config_path(),
        format!("{}{}", &text[..start], config(active, keys)),
    )
    .unwrap();
    server.signal("HUP");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while server
        .stderr_tail()
        .matches("history keyring reloaded")
        .count()
        < reloads
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reload logged: {}",
            server.stderr_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn removing_a_history_key_makes_recovery_answer_not_recovered() {
    let server = Server::start(&config("h1", &[("h1", H1)])).await;
    let mut client = Client::connected(server.ws_url(), "u").await;
    let reply = client
        .call(
            2,
            &json!({"id": 2, "subscribe": {"channel": "log"}}).to_string(),
        )
        .await;
    let epoch = reply["subscribe"]["epoch"].as_str().unwrap().to_owned();
    for id in 3..5 {
        let publish = json!({"id": id, "publish": {"channel": "log", "data": {"n": id}}});
        let reply = client.call(id, &publish.to_string()).await;
        assert!(reply.get("error").is_none(), "{reply}");
    }
    let recover = json!({"id": 2, "subscribe": {
        "channel": "log", "recover": true, "epoch": epoch, "offset": 0}});

    // Rotation (h2 active, h1 kept): recovery still works.
    reload(&server, "h2", &[("h1", H1), ("h2", H2)], 1).await;
    let mut second = Client::connected(server.ws_url(), "u").await;
    let reply = second.call(2, &recover.to_string()).await;
    assert_eq!(reply["subscribe"]["recovered"], true, "{reply}");
    assert_eq!(
        reply["subscribe"]["publications"].as_array().map(Vec::len),
        Some(2),
        "{reply}"
    );

    // h1 removed: what it sealed is gone; no garbage, no panic.
    reload(&server, "h2", &[("h2", H2)], 2).await;
    let mut third = Client::connected(server.ws_url(), "u").await;
    let reply = third.call(2, &recover.to_string()).await;
    assert!(reply.get("error").is_none(), "{reply}");
    // `recovered: false` is left out on the wire (compat: absent = false).
    let result = &reply["subscribe"];
    assert!(
        result.get("recovered").is_none() || result["recovered"] == false,
        "{reply}"
    );
    assert_eq!(result["was_recovering"], true, "{reply}");
    assert!(
        reply["subscribe"].get("publications").is_none()
            || reply["subscribe"]["publications"] == json!([]),
        "{reply}"
    );
    assert!(
        server
            .metric("herald_history_undecryptable_records_total")
            .await
            >= 2.0
    );

    // New publications are sealed with h2 and read back.
    let publish = json!({"id": 5, "publish": {"channel": "log", "data": {"n": 5}}});
    assert!(third
        .call(5, &publish.to_string())
        .await
        .get("error")
        .is_none());
    let history = json!({"id": 6, "history": {"channel": "log", "since": {"offset": 2, "epoch": epoch}, "limit": 10}});
    let reply = third.call(6, &history.to_string()).await;
    assert_eq!(
        reply["history"]["publications"][0]["data"],
        json!({"n": 5}),
        "{reply}"
    );
}
