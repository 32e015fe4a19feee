//! A blocking client over a std `TcpStream`: HELLO on connect, one-call `eval`,
//! `eval_batch`, `eval_json` and `ping`, and a pipelined API — [`Client::send`] many,
//! [`Client::flush`] once, [`Client::recv`] replies as they come (matched by request id).
//!
//! `flush` blocks until every queued byte is written and reads nothing meanwhile, so keep
//! what is in flight within the sockets' buffers (10,000 EVALs pass on loopback, tested),
//! or send in rounds and `recv` between them.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::error::WireError;
use crate::frame::{Check, DEFAULT_MAX_PAYLOAD, HEADER_LEN, VERSION, check};
use crate::message::{Decision, ErrorReply, Eval, EvalJson, Hello, HelloOk, Reply, Request, decode_reply, encode_request};

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Wire(#[from] WireError),
    #[error("server error {}: {}", .0.code, .0.message)]
    Server(ErrorReply),
    #[error("unexpected reply to request {id}: {reply}")]
    Unexpected { id: u64, reply: String },
    #[error("connection closed by the server")]
    Closed,
}

/// One connection to a `sark-pdp` binary port.
#[derive(Debug)]
pub struct Client {
    stream: TcpStream,
    read_buf: Vec<u8>,
    write_buf: Vec<u8>,
    next_id: u64,
    hello: HelloOk,
    /// Replies that arrived while waiting for another id.
    stash: HashMap<u64, Reply>,
}

impl Client {
    /// Connect and say HELLO (with an optional auth token).
    ///
    /// # Errors
    /// Connection failure, or the server refusing the HELLO.
    pub fn connect(addr: impl ToSocketAddrs, token: Option<&str>) -> Result<Client, ClientError> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut c = Client {
            stream,
            read_buf: Vec::with_capacity(64 * 1024),
            write_buf: Vec::with_capacity(64 * 1024),
            next_id: 1,
            hello: HelloOk {
                version: VERSION,
                max_payload: DEFAULT_MAX_PAYLOAD,
                max_batch: 0,
                shards: 0,
                shard: 0,
                bundle_revision: String::new(),
                driver: String::new(),
                route: crate::route::ROUTE_NONE,
                shard_ports: Vec::new(),
            },
            stash: HashMap::new(),
        };
        let id = c.send(&Request::Hello(Hello {
            version: VERSION,
            max_payload: DEFAULT_MAX_PAYLOAD,
            token: token.map(str::to_string),
        }))?;
        c.flush()?;
        match c.recv_id(id)? {
            Reply::HelloOk(h) => c.hello = *h,
            other => return Err(unexpected(id, &other)),
        }
        Ok(c)
    }

    /// What the server said in its HELLO_OK.
    pub fn hello(&self) -> &HelloOk {
        &self.hello
    }

    /// Give up on a reply after `timeout` (`None`: wait for ever).
    ///
    /// # Errors
    /// As `TcpStream::set_read_timeout`.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream.set_read_timeout(timeout)?;
        Ok(())
    }

    /// Queue a request (not sent until [`Self::flush`]); returns its request id.
    ///
    /// # Errors
    /// Never today; reserved for a full send buffer.
    pub fn send(&mut self, request: &Request) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        encode_request(&mut self.write_buf, id, request);
        Ok(id)
    }

    /// Write every queued request.
    ///
    /// # Errors
    /// I/O failure.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&self.write_buf)?;
        self.write_buf.clear();
        Ok(())
    }

    /// The next reply, whichever request it answers (stashed ones first).
    ///
    /// # Errors
    /// I/O failure, a closed connection, an undecodable frame.
    pub fn recv(&mut self) -> Result<(u64, Reply), ClientError> {
        if let Some(&id) = self.stash.keys().next()
            && let Some(reply) = self.stash.remove(&id)
        {
            return Ok((id, reply));
        }
        self.read_frame()
    }

    /// The reply to request `id`, stashing others that arrive first.
    ///
    /// # Errors
    /// As [`Self::recv`].
    pub fn recv_id(&mut self, id: u64) -> Result<Reply, ClientError> {
        if let Some(reply) = self.stash.remove(&id) {
            return Ok(reply);
        }
        loop {
            let (got, reply) = self.read_frame()?;
            if got == id {
                return Ok(reply);
            }
            self.stash.insert(got, reply);
        }
    }

    fn read_frame(&mut self) -> Result<(u64, Reply), ClientError> {
        loop {
            if let Check::Complete { header, total } = check(&self.read_buf, self.hello.max_payload.max(DEFAULT_MAX_PAYLOAD))? {
                let payload = self.read_buf.get(HEADER_LEN..total).unwrap_or(&[]);
                let reply = decode_reply(&header, payload);
                self.read_buf.drain(..total);
                return Ok((header.request_id, reply?));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(ClientError::Closed);
            }
            self.read_buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
        }
    }

    fn call(&mut self, request: &Request) -> Result<(u64, Reply), ClientError> {
        let id = self.send(request)?;
        self.flush()?;
        match self.recv_id(id)? {
            Reply::Error(e) => Err(ClientError::Server(e)),
            reply => Ok((id, reply)),
        }
    }

    /// Decide one typed input.
    ///
    /// # Errors
    /// I/O, protocol, or an ERROR from the server.
    pub fn eval(&mut self, input: Eval) -> Result<Decision, ClientError> {
        match self.call(&Request::Eval(Box::new(input)))? {
            (_, Reply::Decision(d)) => Ok(d),
            (id, other) => Err(unexpected(id, &other)),
        }
    }

    /// Decide one typed input and explain it: the decision and the explanation's JSON text
    /// (`None` from a server that predates explain, which answers a plain DECISION).
    ///
    /// # Errors
    /// As [`Self::eval`].
    pub fn eval_explain(&mut self, input: Eval, level: crate::message::Explain) -> Result<(Decision, Option<String>), ClientError> {
        match self.call(&Request::EvalExplain(Box::new(input), level))? {
            (_, Reply::Explanation(d, json)) => Ok((d, Some(json))),
            (_, Reply::Decision(d)) => Ok((d, None)),
            (id, other) => Err(unexpected(id, &other)),
        }
    }

    /// Decide many typed inputs in one frame; the decisions come back in order.
    ///
    /// # Errors
    /// As [`Self::eval`].
    pub fn eval_batch(&mut self, inputs: Vec<Eval>) -> Result<Vec<Decision>, ClientError> {
        match self.call(&Request::EvalBatch(inputs))? {
            (_, Reply::DecisionBatch(d)) => Ok(d),
            (id, other) => Err(unexpected(id, &other)),
        }
    }

    /// Evaluate any entrypoint on a JSON input; `None` is undefined.
    ///
    /// # Errors
    /// As [`Self::eval`].
    pub fn eval_json(&mut self, entrypoint: &str, input_json: &str) -> Result<Option<String>, ClientError> {
        let req = Request::EvalJson(EvalJson {
            entrypoint: entrypoint.to_string(),
            input_json: input_json.to_string(),
        });
        match self.call(&req)? {
            (_, Reply::Result(v)) => Ok(v),
            (id, other) => Err(unexpected(id, &other)),
        }
    }

    /// Round trip a PING.
    ///
    /// # Errors
    /// As [`Self::eval`].
    /// Drop cached decisions on every shard of the server; whether every shard
    /// acknowledged. The connection's HELLO must have carried the admin token.
    ///
    /// # Errors
    /// I/O, or the server refusing (ERROR 3006 without the token).
    pub fn invalidate(&mut self, what: crate::message::Invalidate) -> Result<bool, ClientError> {
        match self.call(&Request::Invalidate(what))? {
            (_, Reply::Invalidated(acked)) => Ok(acked),
            (id, other) => Err(unexpected(id, &other)),
        }
    }

    pub fn ping(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        match self.call(&Request::Ping(payload.to_vec()))? {
            (_, Reply::Pong(b)) => Ok(b),
            (id, other) => Err(unexpected(id, &other)),
        }
    }
}

/// Key-affine routing: one [`Client`] per shard, each question sent to the shard that
/// owns its user and tool ([`crate::route`]), so that shard's cache sees all of them.
/// Connects to the address given, reads HELLO_OK's shard ports and routing function,
/// then opens one connection to each shard's own port (on the same IP). Without
/// per-shard ports, or with a routing function it does not know, every question goes
/// over the first connection (and is answered just as correctly, by whichever shard
/// the kernel chose).
#[derive(Debug)]
pub struct Router {
    first: Client,
    /// Index = shard; empty when not routing.
    shards: Vec<Client>,
}

impl Router {
    /// Connect to `addr` and to every shard's own port.
    ///
    /// # Errors
    /// A connection or HELLO failing, or a shard port answered by another shard.
    pub fn connect(addr: std::net::SocketAddr, token: Option<&str>) -> Result<Router, ClientError> {
        let first = Client::connect(addr, token)?;
        let h = first.hello().clone();
        let mut shards = Vec::new();
        if h.route == crate::route::ROUTE_FNV1A64_FMIX && h.shard_ports.len() == usize::from(h.shards) && h.shards > 1 {
            for (i, port) in h.shard_ports.iter().enumerate() {
                let c = Client::connect((addr.ip(), *port), token)?;
                if usize::from(c.hello().shard) != i {
                    return Err(ClientError::Unexpected { id: 0, reply: format!("shard port {port} answered as shard {}, not {i}", c.hello().shard) });
                }
                shards.push(c);
            }
        }
        Ok(Router { first, shards })
    }

    /// Whether questions are routed (false: all go over one connection).
    pub fn routing(&self) -> bool {
        !self.shards.is_empty()
    }

    /// The shard that owns `e`.
    pub fn owner(&self, e: &Eval) -> usize {
        usize::from(crate::route::owner_of(e, u16::try_from(self.shards.len()).unwrap_or(u16::MAX)))
    }

    /// The connection `e` goes over.
    pub fn client_for(&mut self, e: &Eval) -> &mut Client {
        let i = self.owner(e);
        match self.shards.get_mut(i) {
            Some(c) => c,
            None => &mut self.first,
        }
    }

    /// Decide one typed input on the shard that owns it.
    ///
    /// # Errors
    /// As [`Client::eval`].
    pub fn eval(&mut self, input: Eval) -> Result<Decision, ClientError> {
        self.client_for(&input).eval(input)
    }

    /// Decide many typed inputs: one EVAL_BATCH per shard, all in flight at once; the
    /// decisions come back in the inputs' order.
    ///
    /// # Errors
    /// As [`Client::eval_batch`].
    pub fn eval_batch(&mut self, inputs: Vec<Eval>) -> Result<Vec<Decision>, ClientError> {
        if self.shards.is_empty() {
            return self.first.eval_batch(inputs);
        }
        let n = inputs.len();
        let mut groups: Vec<(Vec<usize>, Vec<Eval>)> = (0..self.shards.len()).map(|_| (Vec::new(), Vec::new())).collect();
        for (at, e) in inputs.into_iter().enumerate() {
            if let Some(g) = groups.get_mut(self.owner(&e)) {
                g.0.push(at);
                g.1.push(e);
            }
        }
        let mut sent = Vec::new();
        for (c, (at, items)) in self.shards.iter_mut().zip(groups) {
            if !items.is_empty() {
                let id = c.send(&Request::EvalBatch(items))?;
                c.flush()?;
                sent.push((id, at));
            } else {
                sent.push((0, at));
            }
        }
        let mut out: Vec<Option<Decision>> = (0..n).map(|_| None).collect();
        for (c, (id, at)) in self.shards.iter_mut().zip(sent) {
            if at.is_empty() {
                continue;
            }
            let decisions = match c.recv_id(id)? {
                Reply::DecisionBatch(d) if d.len() == at.len() => d,
                Reply::Error(e) => return Err(ClientError::Server(e)),
                other => return Err(unexpected(id, &other)),
            };
            for (i, d) in at.into_iter().zip(decisions) {
                if let Some(slot) = out.get_mut(i) {
                    *slot = Some(d);
                }
            }
        }
        out.into_iter().collect::<Option<Vec<_>>>().ok_or(ClientError::Closed)
    }

    /// What the first connection's server said.
    pub fn hello(&self) -> &HelloOk {
        self.first.hello()
    }
}

fn unexpected(id: u64, reply: &Reply) -> ClientError {
    ClientError::Unexpected {
        id,
        reply: format!("{reply:?}").chars().take(200).collect(),
    }
}
