//! nimbus-redis: Redis adapters for nimbus. A [`RedisQueue`] (a Redis Stream read by a
//! consumer group: `XREADGROUP BLOCK` wakes pollers, `XACK` + `XDEL` delete, `XAUTOCLAIM`
//! reclaims messages whose consumer died, after the visibility timeout, and redrives them to a
//! dead-letter stream after `max_receive_count`), a [`RedisStream`] (one Redis Stream per shard,
//! read by position), and a [`RedisStreamStore`] of leases and checkpoints (atomic via Lua: a
//! checkpoint write checks its writer's lease on the server), so that several processes share
//! queues, shards, checkpoints and leases.
//!
//! # Wire format
//!
//! Any Redis client can produce to (and inspect) what the adapters read; these are the keys and
//! fields, for a [`RedisConfig`] with key `<key>`.
//!
//! **Queue** ([`RedisQueue`]): the stream `<key>`, read by the consumer group `nimbus` (created
//! at connect, from the stream's start, with the stream if missing); each [`RedisQueue`] is a
//! consumer named `nimbus-<16 hex digits>`. One entry is one message: its id (`<ms>-<seq>`) is
//! the message id, its millisecond part the send time, and the group's delivery count (less
//! the receives handed back by a release, below) the receive count. The body is read from the first of these fields the entry has: `b` (what
//! [`RedisQueue::send`] writes), `body`, `data`, `message`, `payload`, `value`; an entry with a
//! single field of any other name is that field. Every other field is an attribute (its value
//! as UTF-8, invalid bytes replaced). An entry with several fields and none of those names has
//! no body: it is not delivered (as an empty body, to be acknowledged and lost) but moved to
//! the dead-letter stream at once with its reason. A message sent by [`RedisQueue::send`]
//! from inside an invocation has the field `nimbus-hops` too: the hop count of its work, for
//! recursive loop detection (`nimbus_core::handler::hops`).
//!
//! **Released receives**: the hash `<key>:released`, field = entry id, value = how many of
//! its deliveries were handed back uncounted by a release; an entry is there only once
//! released, and leaves when acknowledged or dead-lettered.
//!
//! **Dead letters**: the stream `<key>:dlq` (nothing reads it). An entry there has the
//! original entry's fields, then `id` (its id in the queue stream) and `reason` (`received 4
//! times, over max_receive_count = 3`, or `no body field: ...`).
//!
//! ```text
//! redis-cli XADD orders '*' body '{"order":42}' kind order    # body {"order":42}, attribute kind=order
//! redis-cli XADD orders '*' b hello                           # what RedisQueue::send writes
//! redis-cli XADD orders '*' user 7 action click               # no body field: to orders:dlq
//! redis-cli XRANGE orders:dlq - +                             # ... user 7 action click id <id> reason "no body field: ..."
//! ```
//!
//! **Stream** ([`RedisStream`]): one stream per shard, `<key>:shard:<n>` for `n` in
//! `0..shards`; [`RedisStream::put`] appends to the shard whose hash-key range holds the
//! partition key's hash (with one shard, always `<key>:shard:0`). An entry is a record: its id
//! gives the sequence number and the arrival time; the partition key is the first of `k` (what
//! nimbus writes), `key`, `partition_key` (empty without one); the data is the first of `d`
//! (what nimbus writes), `data`, `body`, `message`, `payload`, `value`, else the only other
//! field, else all the other fields as a JSON object of strings. No entry is skipped.
//!
//! ```text
//! redis-cli XADD clicks:shard:0 '*' k user-7 d '{"page":"/"}'   # key user-7, data {"page":"/"}
//! redis-cli XADD clicks:shard:0 '*' user 7 page /               # key "", data {"page":"/","user":"7"}
//! ```
//!
//! **Checkpoints** ([`RedisStreamStore`]): the hash `<key>:checkpoints`, field
//! `<mapping>/<shard>`, value the checkpoint as sortable text (a sequence number of up to 39
//! digits zero-padded to 39; a longer one as `:`, its digit count in three digits, the digits;
//! `~` for a finished shard). A Redis stream position `<ms>-<seq>` is the sequence number
//! `ms << 64 | seq`. **Leases** (the same store): one hash `<key>:lease:<name>` per lease
//! (`owner`, `expires` in server milliseconds, `counter`) and the set `<key>:leases` of their
//! names.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use nimbus_redis::{RedisConfig, RedisQueue};
//! use nimbus_sources::QueueSource;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = RedisQueue::connect(RedisConfig::new("redis://127.0.0.1:6379", "orders")).await?;
//! queue.send("hello".into()).await?;
//! let batch = queue.receive(10, Duration::from_secs(1)).await?;
//! queue.ack(&batch.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>()).await?;
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod fields;
mod queue;
mod reading;
mod receipt;
mod store;
mod stream;

pub use config::RedisConfig;
pub use error::RedisError;
pub use queue::RedisQueue;
pub use store::RedisStreamStore;
pub use stream::RedisStream;
