//! A small SMTP server on 127.0.0.1 for the mailer's tests: it speaks what a plain SMTP client
//! needs (EHLO/HELO, AUTH PLAIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT; no TLS) over real TCP, and
//! records each message it acknowledged. A message counts as received only once the server has
//! answered `250` to its DATA, as a real server commits it: [`SmtpServer::hold_next`] makes the
//! server read the next message to its end and then answer nothing, so a test can kill the
//! client while the server holds it; a connection that closes before the answer leaves nothing
//! recorded. Stopped when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// A message the server acknowledged.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body), dot-unstuffed, CRLF line ends.
    pub data: String,
}

impl Mail {
    /// The value of header `name` (case-insensitive; folded lines joined), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut value: Option<String> = None;
        let mut in_it = false;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if in_it && let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim_start());
                }
                continue;
            }
            in_it = false;
            if let Some((key, rest)) = line.split_once(':')
                && key.eq_ignore_ascii_case(name)
                && value.is_none()
            {
                value = Some(rest.trim().to_owned());
                in_it = true;
            }
        }
        value
    }

    /// The body after the headers (quoted-printable soft line breaks and `=XX` escapes decoded).
    pub fn body(&self) -> String {
        let raw = self.data.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        let quoted =
            self.header("Content-Transfer-Encoding").is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"));
        if !quoted {
            return raw.to_owned();
        }
        let joined = raw.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'='
                && i + 2 < bytes.len()
                && let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16)
            {
                out.push(b);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[derive(Default)]
struct Shared {
    mails: Mutex<Vec<Mail>>,
    /// `user:password` of every AUTH PLAIN, in order.
    logins: Mutex<Vec<String>>,
    hold_next: AtomicBool,
    /// Woken when a message is recorded, and when one is held.
    changed: Notify,
    held: AtomicBool,
}

/// The server; see the module doc.
pub struct SmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpServer {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        let shared = Arc::new(Shared::default());
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let _ = session(stream, shared).await;
                });
            }
        });
        SmtpServer { addr, shared, task }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The messages acknowledged so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.shared.mails.lock().expect("not poisoned").clone()
    }

    /// The `user:password` of every AUTH PLAIN so far.
    pub fn logins(&self) -> Vec<String> {
        self.shared.logins.lock().expect("not poisoned").clone()
    }

    /// The next message is read to its end and then never answered (nor recorded).
    pub fn hold_next(&self) {
        self.shared.held.store(false, Ordering::SeqCst);
        self.shared.hold_next.store(true, Ordering::SeqCst);
    }

    /// Waits until a message is being held (see [`SmtpServer::hold_next`]).
    pub async fn until_held(&self, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            if self.shared.held.load(Ordering::SeqCst) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.shared.held.load(Ordering::SeqCst);
            }
        }
    }

    /// Waits until at least `n` messages were acknowledged; returns them.
    pub async fn until(&self, n: usize, timeout: std::time::Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            let mails = self.mails();
            if mails.len() >= n || tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.mails();
            }
        }
    }
}

async fn session(stream: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 depositd-testkit ESMTP\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command.split([' ', ':']).next().unwrap_or_default().to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write.write_all(b"250-depositd-testkit\r\n250-8BITMIME\r\n250-AUTH PLAIN\r\n250 SMTPUTF8\r\n").await?
            }
            "AUTH" => {
                let mut words = command.split(' ').skip(1);
                let decoded = match (words.next(), words.next()) {
                    (Some(m), Some(b64)) if m.eq_ignore_ascii_case("PLAIN") => base64_decode(b64),
                    _ => None,
                };
                // PLAIN: authzid \0 user \0 password
                let parts: Vec<&str> = decoded.as_deref().map(|d| d.split('\0').collect()).unwrap_or_default();
                match parts.as_slice() {
                    [_, user, password] => {
                        shared.logins.lock().expect("not poisoned").push(format!("{user}:{password}"));
                        write.write_all(b"235 Authentication succeeded\r\n").await?
                    }
                    _ => write.write_all(b"535 Authentication failed\r\n").await?,
                }
            }
            "HELO" => write.write_all(b"250 depositd-testkit\r\n").await?,
            "MAIL" => {
                from = angle(&command);
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "RCPT" => {
                to.push(angle(&command));
                write.write_all(b"250 OK\r\n").await?;
            }
            "DATA" => {
                write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(()); // cut off mid-message: nothing was received
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    let unstuffed = line.strip_prefix('.').unwrap_or(&line);
                    data.push_str(unstuffed);
                }
                if shared.hold_next.swap(false, Ordering::SeqCst) {
                    shared.held.store(true, Ordering::SeqCst);
                    shared.changed.notify_waiters();
                    // Never answer: wait for the client to go away, then forget the message.
                    let mut rest = String::new();
                    while lines.read_line(&mut rest).await? > 0 {
                        rest.clear();
                    }
                    return Ok(());
                }
                shared.mails.lock().expect("not poisoned").push(Mail {
                    from: from.clone(),
                    to: std::mem::take(&mut to),
                    data,
                });
                write.write_all(b"250 OK queued\r\n").await?;
                shared.changed.notify_waiters();
            }
            "RSET" => {
                from.clear();
                to.clear();
                write.write_all(b"250 OK\r\n").await?;
            }
            "NOOP" => write.write_all(b"250 OK\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 Bye\r\n").await?;
                return Ok(());
            }
            _ => write.write_all(b"502 Command not implemented\r\n").await?,
        }
    }
}

/// The address between `<` and `>` in a MAIL or RCPT command.
fn angle(command: &str) -> String {
    match (command.find('<'), command.rfind('>')) {
        (Some(a), Some(b)) if a < b => command[a + 1..b].to_owned(),
        _ => String::new(),
    }
}

/// Standard base64 (with padding) to text; `None` when it is not that.
fn base64_decode(text: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}
