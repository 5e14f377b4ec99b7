//! Total order and in-band order: every in-band command of every connection runs one at a
//! time in one order; each connection's in-band replies come back in request order; nothing
//! is lost or repeated, and one client's disconnect does not disturb the others.

use std::collections::BTreeSet;
use std::thread;

use serde_json::{Value, json};
use tests::{Client, start_server};

#[test]
fn counter_add_has_one_total_order_across_concurrent_connections() {
    const CONNS: usize = 4;
    const EACH: i64 = 250;
    let server = start_server();
    let workers: Vec<_> = (0..CONNS)
        .map(|_| {
            let addr = server.addr.clone();
            thread::spawn(move || {
                let mut client = Client::negotiated(&addr);
                let mut burst = String::new();
                for i in 0..EACH {
                    burst.push_str(&format!(
                        r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{i}}}"#
                    ));
                }
                client.send(&burst);
                let replies = client.recv_n(EACH as usize);
                let ids: Vec<i64> = replies.iter().map(|r| r["id"].as_i64().unwrap()).collect();
                assert_eq!(ids, (0..EACH).collect::<Vec<_>>(), "in-band replies in order");
                replies.iter().map(|r| r["return"]["value"].as_i64().unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for worker in workers {
        let values = worker.join().unwrap();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "a connection's values increase");
        for v in values {
            assert!(all.insert(v), "value {v} seen twice");
        }
    }
    let total = CONNS as i64 * EACH;
    assert_eq!(all, (1..=total).collect::<BTreeSet<_>>(), "exactly 1..={total}");
}

#[test]
fn a_pipelined_burst_of_10000_requests_is_answered_in_order() {
    const N: u64 = 10_000;
    let server = start_server();
    let mut client = Client::negotiated(&server.addr);
    let mut writer = Client::connect(&server.addr);
    drop(writer.recv());
    // Write from another thread so neither side's socket buffer can deadlock the test.
    let mut burst = String::new();
    for i in 0..N {
        let request = if i % 2 == 0 {
            format!(r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{i}}}"#)
        } else {
            format!(r#"{{"execute":"ping","id":{i}}}"#)
        };
        burst.push_str(&request);
    }
    drop(writer);
    let sender = {
        let mut sender = client.clone_writer();
        thread::spawn(move || sender.send(&burst))
    };
    let mut counter = 0;
    for i in 0..N {
        let reply = client.recv();
        assert_eq!(reply["id"], json!(i));
        if i % 2 == 0 {
            counter += 1;
            assert_eq!(reply["return"], json!({"value": counter}));
        } else {
            assert_eq!(reply["return"], json!({}));
        }
    }
    sender.join().unwrap();
}

#[test]
fn a_client_disconnecting_mid_stream_does_not_disturb_others() {
    let server = start_server();
    let mut steady = Client::negotiated(&server.addr);
    {
        let mut leaver = Client::negotiated(&server.addr);
        let mut burst = String::new();
        for i in 0..500 {
            burst.push_str(&format!(r#"{{"execute":"work","arguments":{{"us":20}},"id":{i}}}"#));
        }
        burst.push_str(r#"{"execute":"counter-add","argu"#); // cut mid-request
        leaver.send(&burst);
    } // dropped: closed with requests in flight and a partial message
    let mut burst = String::new();
    for i in 0..100 {
        burst.push_str(&format!(
            r#"{{"execute":"counter-add","arguments":{{"delta":1}},"id":{i}}}"#
        ));
    }
    steady.send(&burst);
    let values: Vec<Value> =
        steady.recv_n(100).iter().map(|r| r["return"]["value"].clone()).collect();
    assert_eq!(values, (1..=100).map(|v| json!(v)).collect::<Vec<_>>());
    assert_eq!(steady.request(r#"{"exec-oob":"ping","id":"x"}"#), json!({"return":{},"id":"x"}));
}
