//! A few administrative Redis commands over a plain socket (RESP), kept off the measured
//! paths: checking that Redis is there, reading `INFO commandstats`, the length of a
//! queue, the keys a chord left, and deleting the queues and results a run leaves behind.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A blocking connection for administrative commands.
pub struct RedisAdmin {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// A reply, errors aside: the bulk strings INFO answers with, integers, arrays (of KEYS),
/// and what is not read.
#[derive(Debug)]
enum Reply {
    Bulk(Option<Vec<u8>>),
    Integer(i64),
    Array(Vec<Reply>),
    Unread,
}

pub type AdminResult<T> = Result<T, String>;

impl RedisAdmin {
    /// Connects to `redis://[[user]:password@]host[:port][/db]`.
    pub fn connect(url: &str) -> AdminResult<RedisAdmin> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("`{url}`: only redis:// URLs are supported here"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (address, db) = rest.split_once('/').unwrap_or((rest, ""));
        let db = db.split('?').next().unwrap_or("");
        let address = if address.contains(':') {
            address.to_owned()
        } else {
            format!("{address}:6379")
        };
        let socket = address
            .to_socket_addrs()
            .map_err(|e| format!("{address}: {e}"))?
            .next()
            .ok_or_else(|| format!("{address}: no address"))?;
        let stream = TcpStream::connect_timeout(&socket, Duration::from_secs(2))
            .map_err(|e| format!("{address}: {e}"))?;
        let timeout = Some(Duration::from_secs(30));
        stream
            .set_read_timeout(timeout)
            .map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(timeout)
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut admin = RedisAdmin {
            reader: BufReader::new(stream),
            writer,
        };
        if let Some(auth) = auth {
            match auth.split_once(':') {
                Some(("", password)) => admin.command(&["AUTH", password])?,
                Some((user, password)) => admin.command(&["AUTH", user, password])?,
                None => admin.command(&["AUTH", auth])?,
            };
        }
        if !db.is_empty() {
            admin.command(&["SELECT", db])?;
        }
        Ok(admin)
    }

    /// The server's version.
    pub fn version(&mut self) -> AdminResult<String> {
        let info = self.info("server")?;
        Ok(info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("?")
            .trim()
            .to_owned())
    }

    /// CPU seconds the server has used (user and system).
    pub fn cpu_seconds(&mut self) -> AdminResult<f64> {
        let info = self.info("cpu")?;
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(field("used_cpu_user") + field("used_cpu_sys"))
    }

    /// How many times each command has run since the server started, and the
    /// microseconds it took (server-wide; commands that Lua scripts call are counted too,
    /// and also within the script's own time).
    pub fn command_stats(&mut self) -> AdminResult<BTreeMap<String, (u64, u64)>> {
        let info = self.info("commandstats")?;
        let mut stats = BTreeMap::new();
        for line in info.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|rest| rest.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            stats.insert(name.to_owned(), (field("calls"), field("usec")));
        }
        Ok(stats)
    }

    /// Deletes `keys`, a thousand per command.
    pub fn delete(&mut self, keys: &[String]) -> AdminResult<()> {
        for chunk in keys.chunks(1000) {
            let mut args = vec!["DEL"];
            args.extend(chunk.iter().map(String::as_str));
            self.command(&args)?;
        }
        Ok(())
    }

    /// Deletes the list `queue` and the bindings workers registered for it.
    pub fn delete_queue(&mut self, queue: &str) -> AdminResult<()> {
        self.delete(&[
            queue.to_owned(),
            format!("_kombu.binding.{queue}"),
            format!("_kombu.binding_permanent.{queue}"),
        ])
    }

    /// How many messages wait in the list `queue`.
    pub fn llen(&mut self, queue: &str) -> AdminResult<u64> {
        match self.command(&["LLEN", queue])? {
            Reply::Integer(n) => Ok(u64::try_from(n).unwrap_or(0)),
            other => Err(format!("unexpected LLEN reply {other:?}")),
        }
    }

    /// The keys matching `pattern` (`KEYS`: the benchmark's database is small and its own).
    pub fn keys(&mut self, pattern: &str) -> AdminResult<Vec<String>> {
        match self.command(&["KEYS", pattern])? {
            Reply::Array(items) => Ok(items
                .into_iter()
                .filter_map(|item| match item {
                    Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                    _ => None,
                })
                .collect()),
            other => Err(format!("unexpected KEYS reply {other:?}")),
        }
    }

    fn info(&mut self, section: &str) -> AdminResult<String> {
        match self.command(&["INFO", section])? {
            Reply::Bulk(Some(bytes)) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            other => Err(format!("unexpected INFO reply {other:?}")),
        }
    }

    fn command(&mut self, args: &[&str]) -> AdminResult<Reply> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        self.writer
            .write_all(&request)
            .map_err(|e| format!("redis: {e}"))?;
        self.read_reply()
    }

    fn read_reply(&mut self) -> AdminResult<Reply> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| format!("redis: {e}"))?;
        let line = line.trim_end();
        let (kind, rest) = line
            .split_at_checked(1)
            .ok_or("redis closed the connection")?;
        let number = || rest.parse::<i64>().map_err(|e| format!("redis: {e}"));
        match kind {
            "+" => Ok(Reply::Unread),
            ":" => Ok(Reply::Integer(number()?)),
            "-" => Err(format!("redis: {rest}")),
            "$" => match usize::try_from(number()?) {
                Err(_) => Ok(Reply::Bulk(None)),
                Ok(len) => {
                    let mut bytes = vec![0; len + 2];
                    self.reader
                        .read_exact(&mut bytes)
                        .map_err(|e| format!("redis: {e}"))?;
                    bytes.truncate(len);
                    Ok(Reply::Bulk(Some(bytes)))
                }
            },
            "*" => {
                let count = usize::try_from(number()?).unwrap_or(0);
                let items = (0..count)
                    .map(|_| self.read_reply())
                    .collect::<AdminResult<_>>()?;
                Ok(Reply::Array(items))
            }
            _ => Err(format!("redis: unexpected reply `{line}`")),
        }
    }
}
