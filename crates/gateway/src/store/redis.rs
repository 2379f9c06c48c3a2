//! The Redis side of the store: the client (`redis://`, `rediss://` with
//! rustls), the connection manager (one multiplexed connection that
//! reconnects by itself), and the commands: a GCRA in one Lua script (one
//! round trip per request, as redis-cell and Envoy's rate-limit service
//! do), and `GET`/`SET … PX` for the cache.
//!
//! Memory in Redis stays bounded: every key it writes expires — a bucket
//! when it would be full again, a cached answer after its TTL — and cached
//! values are capped in size (`store.max_value`).

use std::time::Duration;

use bytes::Bytes;
use redis::{AsyncCommands, Client, RedisError, Script, aio::ConnectionManager};

/// What the fleet-wide GCRA decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GcraReply {
    /// Whether the request may go on.
    pub(crate) allowed: bool,
    /// Requests still allowed at once after this one.
    pub(crate) remaining: u32,
    /// Until a request would be allowed (zero when this one was).
    pub(crate) retry_after: Duration,
    /// Until the bucket is full again.
    pub(crate) reset: Duration,
}

/// The GCRA of governor (`edge/ratelimit.rs`), in microseconds on Redis's
/// own clock (`TIME`), so that every gateway of the fleet agrees whatever
/// their clocks say. KEYS[1]: the bucket; ARGV[1]: the emission interval
/// (µs); ARGV[2]: the burst. The bucket holds its theoretical arrival time
/// and expires when the bucket would be full again. Returns {allowed,
/// remaining, retry after (µs), reset (µs)}.
///
/// Numbers stay below 2^53 (a µs timestamp is about 2^51), so Lua's doubles
/// hold them exactly; `%.0f` writes them without an exponent.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tau = interval * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tau
if now < earliest then
  return {0, 0, earliest - now, tat - now}
end
if tat < now then tat = now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + tau + interval - new_tat) / interval), 0, new_tat - now}
";

fn script() -> &'static Script {
    static SCRIPT: std::sync::OnceLock<Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| Script::new(GCRA))
}

/// A client for `url` (parsed here: nothing is connected).
pub(super) fn client(url: &str) -> Result<Client, String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(format!(
            "`{}` is not a Redis URL: write redis://host:port or rediss://host:port (TLS)",
            super::redacted(url)
        ));
    }
    if url.starts_with("rediss://") {
        // The redis client builds its rustls configuration with the
        // process's default provider: make it the gateway's (ring), unless
        // one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    Client::open(url).map_err(|e| format!("`{}`: {e}", super::redacted(url)))
}

/// The connection manager: connects on first use and after every broken
/// connection; each attempt gives up quickly (the supervisor tries again).
pub(super) fn manager(client: &Client) -> Result<ConnectionManager, RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(500)))
        .set_response_timeout(Some(Duration::from_secs(1)))
        .set_number_of_retries(0);
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// One request against the bucket at `key`.
pub(super) async fn gcra(
    connection: &mut ConnectionManager,
    key: &str,
    interval: Duration,
    burst: u32,
) -> Result<GcraReply, RedisError> {
    let micros = |d: Duration| d.as_micros().min(i64::MAX as u128) as i64;
    let (allowed, remaining, retry_after, reset): (i64, i64, i64, i64) = script()
        .key(key)
        .arg(micros(interval).max(1))
        .arg(burst)
        .invoke_async(connection)
        .await?;
    let duration = |us: i64| Duration::from_micros(us.max(0) as u64);
    Ok(GcraReply {
        allowed: allowed == 1,
        remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
        retry_after: duration(retry_after),
        reset: duration(reset),
    })
}

/// The value at `key`, if there is one of at most `max` bytes. Read with
/// `GETRANGE` up to one byte more than `max`, so that a larger value (written
/// by a gateway with another `max_value`, or by anyone else) is never read
/// whole; an empty value, which no JSON body is, is no value.
pub(super) async fn get(
    connection: &mut ConnectionManager,
    key: &str,
    max: usize,
) -> Result<Option<Bytes>, RedisError> {
    let value: Vec<u8> = redis::cmd("GETRANGE")
        .arg(key)
        .arg(0)
        .arg(max)
        .query_async(connection)
        .await?;
    Ok((!value.is_empty() && value.len() <= max).then(|| Bytes::from(value)))
}

/// `value` at `key`, for `ttl`.
pub(super) async fn put(
    connection: &mut ConnectionManager,
    key: &str,
    value: &[u8],
    ttl: Duration,
) -> Result<(), RedisError> {
    let millis = ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64;
    connection.pset_ex(key, value, millis).await
}

/// Whether the store answers: a `PING`, and when it is coming back, the
/// GCRA script loaded again.
///
/// A `PING` that finds the connection broken (a refused connection kept
/// from the last attempt, or one Redis closed) is sent once more: its
/// failure has just set the manager connecting again, and the second `PING`
/// goes over that new connection. Without it, the first probe after Redis
/// came back only set off the reconnection, and the store was used again a
/// probe later (half a second). A `PING` that timed out (a slow Redis, not
/// a broken connection) is not repeated.
pub(super) async fn probe(
    connection: &mut ConnectionManager,
    load_script: bool,
) -> Result<(), RedisError> {
    let ping = redis::cmd("PING");
    let first: Result<String, RedisError> = ping.query_async(connection).await;
    match first {
        Err(e) if (e.is_io_error() || e.is_unrecoverable_error()) && !e.is_timeout() => {
            let _: String = ping.query_async(connection).await?;
        }
        other => {
            other?;
        }
    }
    if load_script {
        let _: String = script().prepare_invoke().load_async(connection).await?;
    }
    Ok(())
}
