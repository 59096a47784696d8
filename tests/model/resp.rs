//! A minimal RESP2 client for the conformance test: one TCP connection,
//! commands as byte strings, replies parsed in full (no timeouts guessed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::redis::Reply;

pub struct Conn {
    r: BufReader<TcpStream>,
}

/// A reply, with nil (which the scripts never return) kept apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Err(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Arr(Option<Vec<Resp>>),
}

impl Resp {
    /// As a script reply (`Reply`); status strings and nil are not expected.
    pub fn reply(&self) -> Reply {
        match self {
            Resp::Int(i) => Reply::Int(*i),
            Resp::Err(e) => Reply::Err(e.clone()),
            Resp::Bulk(Some(b)) => Reply::Bulk(String::from_utf8_lossy(b).into_owned()),
            Resp::Arr(Some(a)) => Reply::Arr(a.iter().map(Resp::reply).collect()),
            other => Reply::Err(format!("unexpected {other:?}")),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) | Resp::Err(s) => s.clone(),
            Resp::Int(i) => i.to_string(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    pub fn items(&self) -> Vec<Resp> {
        match self {
            Resp::Arr(Some(a)) => a.clone(),
            Resp::Arr(None) => vec![],
            other => panic!("expected an array, got {other:?}"),
        }
    }
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let s =
            TcpStream::connect(("127.0.0.1", port)).expect("connect to the test's redis-server");
        // Generous: only a hung server would hit it, and then the test
        // should fail rather than hang.
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.set_nodelay(true).ok();
        Conn {
            r: BufReader::new(s),
        }
    }

    pub fn send(&mut self, args: &[&[u8]]) {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.r.get_mut().write_all(&req).expect("write to redis");
    }

    pub fn call(&mut self, args: &[&[u8]]) -> Resp {
        self.send(args);
        self.read()
    }

    pub fn cmd(&mut self, args: &[&str]) -> Resp {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.call(&a)
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read from redis");
        assert!(l.ends_with("\r\n"), "connection closed mid-reply: {l:?}");
        l.truncate(l.len() - 2);
        l
    }

    pub fn read(&mut self) -> Resp {
        let l = self.line();
        let (t, rest) = l.split_at(1);
        match t {
            "+" => Resp::Simple(rest.into()),
            "-" => Resp::Err(rest.into()),
            ":" => Resp::Int(rest.parse().expect("integer reply")),
            "$" => {
                let n: i64 = rest.parse().expect("bulk length");
                if n < 0 {
                    return Resp::Bulk(None);
                }
                let mut b = vec![0; n as usize + 2];
                self.r.read_exact(&mut b).expect("bulk body");
                b.truncate(n as usize);
                Resp::Bulk(Some(b))
            }
            "*" => {
                let n: i64 = rest.parse().expect("array length");
                if n < 0 {
                    return Resp::Arr(None);
                }
                Resp::Arr(Some((0..n).map(|_| self.read()).collect()))
            }
            _ => panic!("bad RESP line {l:?}"),
        }
    }
}
