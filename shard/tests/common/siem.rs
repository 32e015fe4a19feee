//! A stand-in Splunk HEC collector and Datadog log intake for the black-box tests: checks
//! each request's documented shape (path, auth header, gzip above 1 KiB, body), keeps the
//! decision ids it accepted (duplicates included), and fails on command.

#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// As the real service does on success.
    Ok = 0,
    /// 503 Service Unavailable.
    Unavailable = 1,
    /// Reads the request, then resets the connection.
    Reset = 2,
    /// Reads the request and never answers (the sender's timeout).
    Hang = 3,
    /// Answers success after 300 ms.
    Slow = 4,
}

pub struct Receiver {
    pub url: String,
    /// Decision ids accepted, in arrival order (at-least-once: a batch may come twice).
    pub ids: Arc<Mutex<Vec<String>>>,
    mode: Arc<AtomicU8>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let ids: Arc<Mutex<Vec<String>>> = Arc::default();
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let (got, now) = (ids.clone(), mode.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let (got, now) = (got.clone(), now.clone());
                std::thread::spawn(move || answer(stream.unwrap(), &got, &now));
            }
        });
        Receiver { url, ids, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn distinct(&self) -> std::collections::BTreeSet<String> {
        self.ids.lock().unwrap().iter().cloned().collect()
    }
}

fn answer(mut s: std::net::TcpStream, got: &Mutex<Vec<String>>, mode: &AtomicU8) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let (head, len) = loop {
        let Ok(k) = s.read(&mut buf) else { return };
        if k == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..k]);
        if let Some(h) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&raw[..h]).to_lowercase();
            let len: usize = text.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().trim().parse().unwrap();
            break (h + 4, len);
        }
    };
    while raw.len() < head + len {
        let Ok(k) = s.read(&mut buf) else { return };
        if k == 0 {
            return;
        }
        raw.extend_from_slice(&buf[..k]);
    }
    let text = String::from_utf8_lossy(&raw[..head]).to_lowercase();
    let datadog = text.starts_with("post /api/v2/logs http/1.1");
    assert!(datadog || text.starts_with("post /services/collector/event http/1.1"), "{text}");
    assert!(text.contains(if datadog { "\r\ndd-api-key: " } else { "\r\nauthorization: splunk " }), "{text}");
    let mut body = String::new();
    if text.contains("content-encoding: gzip") {
        flate2::read::GzDecoder::new(&raw[head..head + len]).read_to_string(&mut body).unwrap();
    } else {
        assert!(len <= 1024, "bodies over 1 KiB must be gzipped");
        body = String::from_utf8_lossy(&raw[head..head + len]).into_owned();
    }
    match mode.load(Ordering::SeqCst) {
        1 => {
            let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
            return;
        }
        2 => {
            // SO_LINGER 0: close sends a reset.
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            return;
        }
        3 => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        4 => std::thread::sleep(Duration::from_millis(300)),
        _ => {}
    }
    let mut ids = Vec::new();
    if datadog {
        let entries: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        assert!(entries.len() <= 1000);
        for e in &entries {
            assert_eq!(e["ddsource"], "sark");
            ids.push(e["decision_id"].as_str().unwrap().to_string());
        }
    } else {
        for line in body.lines() {
            let e: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!((e["source"].as_str(), e["sourcetype"].as_str()), (Some("sark"), Some("sark:audit:event")), "{line}");
            ids.push(e["event"]["decision_id"].as_str().unwrap().to_string());
        }
    }
    got.lock().unwrap().extend(ids);
    let _ = if datadog {
        s.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
    } else {
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 27\r\n\r\n{\"text\":\"Success\",\"code\":0}")
    };
}
