//! A Redis queue receipt: the entry and the delivery it names, and the scripts that act on
//! that delivery only while it is current (still pending with the delivery count the receipt
//! was made with, and idle for less than the visibility timeout).
//!
//! The group's delivery count names a delivery: it grows with every delivery and never goes
//! back, so no two deliveries of an entry share a receipt. A release does not set it back (a
//! released receipt would then name the next delivery); it counts the receive it hands back
//! in the hash `<key>:released` instead, and a receive reports the delivery count less that.
//!
//! The idle time is the server's: `XPENDING` reports how long ago the entry was last
//! delivered (or handed back with `XCLAIM ... IDLE`), and `XAUTOCLAIM` reclaims on the same
//! clock, so an expired receipt is refused exactly when its message becomes reclaimable.

use std::collections::HashMap;

use nimbus_sources::Receipt;

/// Deletes the deliveries named, each only if current: pending with the receipt's delivery
/// count and idle for less than the visibility timeout; forgets their released receives.
/// Returns, per pair, 1 if it deleted the entry and 0 if the receipt was not current (a second
/// receipt of an entry this call deletes is not, nor one whose id is not the entry's own
/// spelling).
///
/// Every receipt is checked first, then the current entries are deleted with one `XACK` and
/// one `XDEL` per thousand ids: an `XDEL` per id cost the server about 4.5 µs each, most of
/// an acknowledgement's time, on the one thread every poller shares.
///
/// The pending entries are read with one `XPENDING` over the range from the least id named
/// to the greatest (ARGV[3] and ARGV[4], found by the caller: a batch's messages were received
/// together, so the range holds little else), and only an id it does not answer for (a
/// receipt no longer current, an id spelt otherwise, a range holding more than it read) is
/// looked up on its own: an `XPENDING` per id cost the server about half of the script's time.
///
/// KEYS[1] = the stream, KEYS[2] = its released-receives hash; ARGV = group, visibility
/// timeout in ms, least and greatest id (empty: none), then id and count pairs.
pub(crate) const ACK: &str = r"
local group, visibility, lo, hi = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local released = redis.call('EXISTS', KEYS[2]) == 1
local pending = {}
if lo ~= '' then
  for _, entry in ipairs(redis.call('XPENDING', KEYS[1], group, lo, hi, #ARGV + 16)) do
    pending[entry[1]] = entry
  end
end
local done, current, seen = {}, {}, {}
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local entry = nil
  if not seen[id] then
    entry = pending[id] or redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
  end
  -- The entry found must be the one named: an id spelt otherwise (`5` finds `5-3`) is not.
  -- Its idle time and delivery count are integer replies, numbers in Lua already.
  if entry and entry[1] == id and entry[4] == tonumber(ARGV[i + 1])
      and entry[3] < visibility then
    seen[id] = true
    current[#current + 1] = id
    done[#done + 1] = 1
  else
    done[#done + 1] = 0
  end
end
for first = 1, #current, 1000 do
  local last = math.min(first + 999, #current)
  redis.call('XACK', KEYS[1], group, unpack(current, first, last))
  redis.call('XDEL', KEYS[1], unpack(current, first, last))
  if released then redis.call('HDEL', KEYS[2], unpack(current, first, last)) end
end
return done
";

/// Makes a current delivery reclaimable after a delay: its idle time is set to the visibility
/// timeout less the delay (`XCLAIM ... IDLE`, `JUSTID` keeps the delivery count). KEYS[1] =
/// the stream; ARGV = group, consumer, visibility timeout in ms, id, count, idle to set.
/// Returns 1, or 0 if the receipt is not current.
pub(crate) const RETRY_LATER: &str = r"
local group, consumer, visibility = ARGV[1], ARGV[2], tonumber(ARGV[3])
local id = ARGV[4]
local entry = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
if entry and tonumber(entry[4]) == tonumber(ARGV[5]) and tonumber(entry[3]) < visibility then
  redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'IDLE', ARGV[6], 'JUSTID')
  return 1
end
return 0
";

/// Hands received messages back without counting the receive: each current delivery of this
/// consumer is made idle for the visibility timeout (`XCLAIM ... IDLE ... JUSTID`, which keeps
/// the delivery count), so that the next `XAUTOCLAIM` takes it at once, and the receive it
/// hands back is counted in the released-receives hash, so that the next receive reports the
/// same receive count. KEYS[1] = the stream, KEYS[2] = the released-receives hash; ARGV =
/// group, consumer, visibility timeout in ms, then id and count pairs. Returns, per pair, 1 if
/// it released the entry and 0 if the receipt was not current.
pub(crate) const RELEASE: &str = r"
local group, consumer, idle = ARGV[1], ARGV[2], ARGV[3]
local done = {}
for i = 4, #ARGV, 2 do
  local id = ARGV[i]
  local entry = redis.call('XPENDING', KEYS[1], group, id, id, 1)[1]
  if entry and entry[2] == consumer and tonumber(entry[4]) == tonumber(ARGV[i + 1])
      and tonumber(entry[3]) < tonumber(idle) then
    redis.call('XCLAIM', KEYS[1], group, consumer, 0, id, 'IDLE', idle, 'JUSTID')
    redis.call('HINCRBY', KEYS[2], id, 1)
    done[#done + 1] = 1
  else
    done[#done + 1] = 0
  end
end
return done
";

/// The scripts, hashed once per queue.
pub(crate) struct Scripts {
    pub(crate) ack: redis::Script,
    pub(crate) retry_later: redis::Script,
    pub(crate) release: redis::Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            ack: redis::Script::new(ACK),
            retry_later: redis::Script::new(RETRY_LATER),
            release: redis::Script::new(RELEASE),
        }
    }
}

/// The receipt of a delivery, by the group's delivery count: `<id>` for a first delivery
/// (every new message, so the hot path allocates nothing more), `<id>:<count>` for later ones.
pub(crate) fn receipt_of(id: &str, count: u32) -> Receipt {
    if count == 1 {
        Receipt::token(id)
    } else {
        Receipt::token(format!("{id}:{count}"))
    }
}

/// The entry id and delivery count a receipt names (see [`receipt_of`]); `None` for a token
/// whose id is not a stream id (`ms-seq`), which Redis would refuse for the whole script.
pub(crate) fn delivery_of(receipt: &Receipt) -> Option<(&str, u32)> {
    let token = receipt.as_token()?;
    let (id, count) = match token.split_once(':') {
        None => (token, 1),
        Some((id, count)) => (id, count.parse().ok()?),
    };
    stream_id(id).map(|_| (id, count))
}

/// A stream id `ms-seq` as the numbers it orders by.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// The deliveries an ack or a release names: each once, as `id, count` script arguments,
/// and which of them each receipt named (`None`: not a receipt of this queue).
#[derive(Debug)]
pub(crate) struct Deliveries {
    pub(crate) args: Vec<String>,
    of: Vec<Option<usize>>,
    /// The least and the greatest of the ids that read as stream ids (`ms-seq`), as named.
    pub(crate) range: Option<(String, String)>,
}

impl Deliveries {
    pub(crate) fn of(receipts: &[Receipt]) -> Self {
        let mut distinct: Vec<(&str, u32)> = Vec::with_capacity(receipts.len());
        let mut seen: HashMap<(&str, u32), usize> = HashMap::with_capacity(receipts.len());
        let of = receipts
            .iter()
            .map(|r| {
                let delivery = delivery_of(r)?;
                Some(*seen.entry(delivery).or_insert_with(|| {
                    distinct.push(delivery);
                    distinct.len() - 1
                }))
            })
            .collect();
        let args = distinct
            .iter()
            .flat_map(|(id, count)| [(*id).to_owned(), count.to_string()])
            .collect();
        let ids = || {
            distinct
                .iter()
                .filter_map(|(id, _)| Some((stream_id(id)?, *id)))
        };
        let range = ids()
            .min()
            .zip(ids().max())
            .map(|((_, lo), (_, hi))| (lo.to_owned(), hi.to_owned()));
        Self { args, of, range }
    }

    /// Whether no receipt names a delivery of this queue.
    pub(crate) fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// The positions of the receipts refused, given the script's answer per delivery.
    pub(crate) fn refused(&self, done: &[i64]) -> Vec<usize> {
        self.of
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_none_or(|d| done.get(d) != Some(&1)))
            .map(|(at, _)| at)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_name_the_delivery() {
        assert_eq!(delivery_of(&receipt_of("1-0", 1)), Some(("1-0", 1)));
        assert_eq!(delivery_of(&receipt_of("1-0", 3)), Some(("1-0", 3)));
        assert_ne!(receipt_of("1-0", 1), receipt_of("1-0", 2));
        assert_eq!(delivery_of(&Receipt::token("1-0:x")), None);
        assert_eq!(delivery_of(&Receipt::from_parts(1, 2)), None);
        for not_an_id in ["x", "", "5", "5-x", "1-0-0", "-1"] {
            assert_eq!(delivery_of(&Receipt::token(not_an_id)), None, "{not_an_id}");
        }
        let deliveries = Deliveries::of(&[
            receipt_of("2-0", 1),
            receipt_of("1-0", 2),
            Receipt::token("x:y"),
            receipt_of("2-0", 1),
        ]);
        assert_eq!(deliveries.args, ["2-0", "1", "1-0", "2"]);
        assert_eq!(deliveries.range, Some(("1-0".to_owned(), "2-0".to_owned())));
        // 2-0 done, 1-0 refused; the malformed one is refused; 2-0 given twice is done.
        assert_eq!(deliveries.refused(&[1, 0]), [1, 2]);
    }
}
