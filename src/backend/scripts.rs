//! The Lua scripts, one `.lua` file each, hashed once and run by SHA
//! (redis-rs `Script::invoke_async`: EVALSHA, and on NOSCRIPT, LOAD and retry).

use std::sync::LazyLock;

use redis::Script;

pub static ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/acquire.lua")));
pub static RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/renew.lua")));
pub static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/release.lua")));
pub static PROCLAIM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/proclaim.lua")));
pub static STATUS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/status.lua")));
pub static LEAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/leave.lua")));
pub static CONFIRM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/confirm.lua")));
pub static QUOTA_FIXED: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/quota_fixed.lua")));
pub static QUOTA_SLIDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/quota_sliding.lua")));
pub static CACHE_GET: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/cache_get.lua")));
pub static CACHE_STORE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/cache_store.lua")));
pub static SEM_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/sem_acquire.lua")));
pub static SEM_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/sem_renew.lua")));
pub static SEM_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/sem_release.lua")));
pub static SEM_STATUS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/sem_status.lua")));
