//! The Lua scripts, one `.lua` file each, hashed once and run by SHA.
//!
//! Every invocation — single or in a batch, on every deployment — goes through
//! [`super::node::Node::exec`], which recovers from NOSCRIPT by loading exactly
//! the scripts Redis did not know and running those calls again. (A restart,
//! a failover or `SCRIPT FLUSH` empties Redis's script cache.)

use std::sync::LazyLock;

use redis::{Cmd, ToRedisArgs};

/// One Lua script: its source and SHA1.
pub struct Lua {
    pub name: &'static str,
    code: &'static str,
    hash: String,
}

impl Lua {
    fn new(name: &'static str, code: &'static str) -> Lua {
        let hash = redis::Script::new(code).get_hash().to_string();
        Lua { name, code, hash }
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// `SCRIPT LOAD <code>`.
    pub fn load_cmd(&self) -> Cmd {
        let mut c = redis::cmd("SCRIPT");
        c.arg("LOAD").arg(self.code);
        c
    }
}

impl std::fmt::Debug for Lua {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// One invocation of a script: its keys and arguments.
#[derive(Debug)]
pub struct Call {
    pub script: &'static Lua,
    keys: Vec<String>,
    args: Vec<Vec<Vec<u8>>>,
}

impl Call {
    pub fn new(script: &'static LazyLock<Lua>) -> Call {
        Call {
            script: LazyLock::force(script),
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn key(mut self, k: impl Into<String>) -> Call {
        self.keys.push(k.into());
        self
    }

    pub fn arg(mut self, a: impl ToRedisArgs) -> Call {
        self.args.push(a.to_redis_args());
        self
    }

    /// `EVALSHA <sha> <numkeys> keys... args...`.
    pub fn cmd(&self) -> Cmd {
        let mut c = redis::cmd("EVALSHA");
        c.arg(self.script.hash()).arg(self.keys.len());
        for k in &self.keys {
            c.arg(k);
        }
        for a in &self.args {
            for part in a {
                c.arg(part.as_slice());
            }
        }
        c
    }
}

macro_rules! scripts {
    ($($id:ident = $file:literal;)*) => {
        $(pub static $id: LazyLock<Lua> =
            LazyLock::new(|| Lua::new($file, include_str!(concat!("scripts/", $file, ".lua"))));)*
    };
}

scripts! {
    ACQUIRE = "acquire";
    RENEW = "renew";
    RELEASE = "release";
    PROCLAIM = "proclaim";
    STATUS = "status";
    LEAVE = "leave";
    CONFIRM = "confirm";
    QUOTA_FIXED = "quota_fixed";
    QUOTA_SLIDING = "quota_sliding";
    CACHE_GET = "cache_get";
    CACHE_STORE = "cache_store";
    SEM_ACQUIRE = "sem_acquire";
    SEM_RENEW = "sem_renew";
    SEM_RELEASE = "sem_release";
    SEM_STATUS = "sem_status";
}
