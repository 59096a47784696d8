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

/// Helpers shared by the lease and semaphore scripts, put in front of each
/// script that uses them (other clients must do the same).
pub const PRELUDE: &str = include_str!("scripts/prelude.lua");

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
    ($($id:ident = $file:literal $(+ $prelude:ident)?;)*) => {
        $(pub static $id: LazyLock<Lua> = LazyLock::new(|| {
            let body = include_str!(concat!("scripts/", $file, ".lua"));
            $(let _ = stringify!($prelude);
              let body: &'static str = Box::leak(format!("{PRELUDE}\n{body}").into_boxed_str());)?
            Lua::new($file, body)
        });)*
    };
}

scripts! {
    ACQUIRE = "acquire" + prelude;
    RENEW = "renew" + prelude;
    RELEASE = "release" + prelude;
    PROCLAIM = "proclaim";
    STATUS = "status" + prelude;
    LEAVE = "leave" + prelude;
    OBSERVE = "observe" + prelude;
    CONFIRM = "confirm";
    QUOTA_FIXED = "quota_fixed";
    QUOTA_SLIDING = "quota_sliding";
    CACHE_GET = "cache_get";
    CACHE_STORE = "cache_store";
    SEM_ACQUIRE = "sem_acquire" + prelude;
    SEM_RENEW = "sem_renew" + prelude;
    SEM_RELEASE = "sem_release" + prelude;
    SEM_LEAVE = "sem_leave" + prelude;
    SEM_STATUS = "sem_status";
    RUN_NOTE = "run_note";
}
