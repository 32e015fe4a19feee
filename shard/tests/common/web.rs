//! Raw HTTP/1.1 for the black-box tests (httparse reads the answers).

#![allow(dead_code, clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Every whole response in `bytes`.
pub fn parse(mut bytes: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut r = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = r.parse(bytes) else { return out };
        let headers: Vec<(String, String)> =
            r.headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned())).collect();
        let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        if bytes.len() < n + len {
            return out;
        }
        out.push(Resp { status: r.code.unwrap(), headers, body: bytes[n..n + len].to_vec() });
        bytes = &bytes[n + len..];
    }
}

/// Write `raw`, read until the server closes or `want` responses arrived.
pub fn exchange(addr: SocketAddr, raw: &[u8], want: usize) -> Vec<Resp> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if parse(&got).len() >= want {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    parse(&got)
}

pub fn request(method: &str, path: &str, body: &str, headers: &str) -> Vec<u8> {
    format!("{method} {path} HTTP/1.1\r\nhost: pdp.test\r\ncontent-length: {}\r\n{headers}\r\n{body}", body.len()).into_bytes()
}

pub fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    exchange(addr, &request(method, path, body, "connection: close\r\n"), 1).pop().expect("no response")
}

pub fn sample_input() -> Value {
    serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/samples/invoke-medium.json")).unwrap()).unwrap()
}

