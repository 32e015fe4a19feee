//! Optional TLS (rustls, ring provider) on the binary, HTTP and admin listeners, and
//! optional mutual TLS: `[tls]` in the settings file or `--tls-cert`, `--tls-key`,
//! `--tls-client-ca`. With a client CA, a caller must show a certificate that chains to it
//! or the handshake fails; the caller token (and the admin token) still apply on top.
//!
//! rustls is sans-I/O: [`Stream`] feeds it the socket's bytes with monoio's owned-buffer
//! reads and writes what it produces, so one connection loop serves plain and TLS
//! connections alike. The handshake happens inside the first reads, so the listeners'
//! idle and request timeouts bound a handshake that never finishes (slowloris over TLS).

use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the server's certificate chain and key are, and the CA that client certificates
/// must chain to (`None`: no client certificates asked for).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("TLS certificates {}: {e}", path.display()))?;
    anyhow::ensure!(!certs.is_empty(), "TLS certificates {}: no PEM certificate in the file", path.display());
    Ok(certs)
}

/// The rustls server configuration for `files`.
///
/// # Errors
/// A file that cannot be read or holds no certificate or key, a key that does not match
/// the certificate, a client CA that is not a usable trust anchor.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| anyhow::anyhow!("TLS key {}: {e}", files.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).map_err(|e| anyhow::anyhow!("TLS client CA {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| anyhow::anyhow!("TLS client CA {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| anyhow::anyhow!("TLS certificate {} with key {}: {e}", files.cert.display(), files.key.display()))?;
    Ok(Arc::new(config))
}

/// An accepted connection, plain or TLS.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

pub(crate) struct Tls {
    tcp: TcpStream,
    conn: rustls::ServerConnection,
    /// Ciphertext read from the socket; `cipher[at..]` is not yet given to rustls.
    cipher: Vec<u8>,
    at: usize,
    /// Ciphertext rustls produced, reused between writes.
    out: Vec<u8>,
}

impl Stream {
    /// `tcp` as it comes (`config` is `None`) or with a TLS server session on it.
    pub(crate) fn new(tcp: TcpStream, config: Option<&Arc<rustls::ServerConfig>>) -> io::Result<Stream> {
        Ok(match config {
            None => Stream::Plain(tcp),
            Some(c) => {
                let conn = rustls::ServerConnection::new(c.clone()).map_err(io::Error::other)?;
                Stream::Tls(Box::new(Tls { tcp, conn, cipher: Vec::new(), at: 0, out: Vec::new() }))
            }
        })
    }

    /// Read at least one more byte onto the end of `buf` (into its spare capacity): how
    /// many, or 0 at the end of the stream.
    pub(crate) async fn read_more(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Stream::Plain(tcp) => {
                let at = buf.len();
                let (res, slice) = tcp.read(buf.slice_mut(at..)).await;
                (res, slice.into_inner())
            }
            Stream::Tls(t) => t.read_more(buf).await,
        }
    }

    /// End the connection cleanly: a TLS connection says close_notify first (HTTP/1.1
    /// clients treat a TLS stream that ends without it as truncated).
    pub(crate) async fn close(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            // A peer that reads nothing more must not hold the connection open.
            let _ = monoio::time::timeout(std::time::Duration::from_secs(1), t.flush()).await;
        }
    }

    /// Write all of `buf`.
    pub(crate) async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Stream::Plain(tcp) => {
                let (res, buf) = tcp.write_all(buf).await;
                (res.map(|_| ()), buf)
            }
            Stream::Tls(t) => {
                let res = t.write_all(&buf).await;
                (res, buf)
            }
        }
    }
}

impl Tls {
    async fn read_more(&mut self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        let mut got = 0;
        loop {
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // Tell the peer why (the alert rustls queued), then give up.
                    let _ = self.flush().await;
                    return (Err(io::Error::new(io::ErrorKind::InvalidData, e)), buf);
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = buf.len();
                buf.resize(start + n, 0);
                let read = buf.get_mut(start..).map_or(Ok(0), |spare| self.conn.reader().read(spare));
                let read = read.unwrap_or(0);
                buf.truncate(start + read);
                got += read;
            }
            if let Err(e) = self.flush().await {
                return (Err(e), buf);
            }
            let pending = self.cipher.len() > self.at;
            if !pending && (got > 0 || state.peer_has_closed()) {
                return (Ok(got), buf);
            }
            if !pending {
                // Taken while the read is in flight: a cancelled read (a timeout) leaves
                // an empty buffer behind, never a stale position.
                let mut c = std::mem::take(&mut self.cipher);
                self.at = 0;
                c.clear();
                c.reserve(18 * 1024);
                let (res, c) = self.tcp.read(c).await;
                self.cipher = c;
                match res {
                    Ok(0) => return (Ok(got), buf),
                    Ok(_) => {}
                    Err(e) => return (Err(e), buf),
                }
            }
            let mut rest = self.cipher.get(self.at..).unwrap_or(&[]);
            match self.conn.read_tls(&mut rest) {
                Ok(n) => self.at += n,
                Err(e) => return (Err(e), buf),
            }
        }
    }

    /// Send what rustls has queued (handshake messages, alerts, records).
    async fn flush(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            let mut out = std::mem::take(&mut self.out);
            out.clear();
            self.conn.write_tls(&mut out)?;
            let (res, out) = self.tcp.write_all(out).await;
            self.out = out;
            res?;
        }
        Ok(())
    }

    async fn write_all(&mut self, mut plain: &[u8]) -> io::Result<()> {
        while !plain.is_empty() {
            // rustls takes what fits its send buffer; the rest goes after a flush.
            let n = self.conn.writer().write(plain)?;
            plain = plain.get(n..).unwrap_or(&[]);
            self.flush().await?;
        }
        self.flush().await
    }
}
