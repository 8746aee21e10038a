//! The last hour of traffic, minute by minute: a fixed ring of 60 buckets
//! per row of the breakdown (mount), for the status page's chart. Memory is
//! bounded by construction (rows come from the configuration); a bucket is
//! reused when its minute comes round again, so nothing ever needs pruning.

/// Buckets in a ring: one hour of minutes.
pub const MINUTES: usize = 60;

/// One minute of one row's traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Minute {
    /// Requests answered HIT.
    pub hit: u64,
    /// Requests answered MISS.
    pub miss: u64,
    /// Requests answered PASS.
    pub pass: u64,
    /// Other requests (errors, refusals, clients gone before an answer).
    pub other: u64,
    /// Body bytes sent from the cache.
    pub bytes_from_cache: u64,
    /// Body bytes sent as they came from upstream.
    pub bytes_from_upstream: u64,
}

impl Minute {
    /// Every request of the minute.
    pub fn requests(&self) -> u64 {
        self.hit + self.miss + self.pass + self.other
    }

    /// HIT / (HIT + MISS + PASS), `None` for a minute without downloads.
    pub fn hit_ratio(&self) -> Option<f64> {
        let downloads = self.hit + self.miss + self.pass;
        (downloads > 0).then(|| self.hit as f64 / downloads as f64)
    }

    /// Adds `other` into this minute.
    pub fn add(&mut self, other: &Minute) {
        self.hit += other.hit;
        self.miss += other.miss;
        self.pass += other.pass;
        self.other += other.other;
        self.bytes_from_cache += other.bytes_from_cache;
        self.bytes_from_upstream += other.bytes_from_upstream;
    }
}

/// The ring: bucket `m % MINUTES` holds minute `m` (minutes counted from
/// the app's start) while its stamp says so.
#[derive(Clone, Debug)]
pub struct Ring {
    buckets: [(u64, Minute); MINUTES],
}

impl Default for Ring {
    fn default() -> Self {
        // No minute is u64::MAX: every bucket starts empty.
        Ring {
            buckets: [(u64::MAX, Minute::default()); MINUTES],
        }
    }
}

impl Ring {
    /// The bucket of minute `now`, emptied first if it held an older minute.
    pub fn at(&mut self, now: u64) -> &mut Minute {
        let (stamp, minute) = &mut self.buckets[(now % MINUTES as u64) as usize];
        if *stamp != now {
            *stamp = now;
            *minute = Minute::default();
        }
        minute
    }

    /// The hour ending with minute `now`, oldest first (minutes before the
    /// start, or with no traffic, are empty).
    pub fn last_hour(&self, now: u64) -> [Minute; MINUTES] {
        let mut out = [Minute::default(); MINUTES];
        for (i, slot) in out.iter_mut().enumerate() {
            let Some(minute) = (now + 1 + i as u64).checked_sub(MINUTES as u64) else {
                continue;
            };
            let (stamp, bucket) = &self.buckets[(minute % MINUTES as u64) as usize];
            if *stamp == minute {
                *slot = *bucket;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_minutes_then_the_ring_comes_round() {
        let mut ring = Ring::default();
        ring.at(0).hit += 1;
        ring.at(3).miss += 2;
        let hour = ring.last_hour(3);
        assert_eq!(hour[MINUTES - 4].hit, 1, "minute 0, three before now");
        assert_eq!(hour[MINUTES - 1].miss, 2, "now");
        assert_eq!(hour.iter().map(Minute::requests).sum::<u64>(), 3);

        // Sixty minutes on, minute 0 is out of the window and its bucket
        // starts again at zero for minute 60.
        assert_eq!(
            ring.last_hour(60).iter().map(Minute::requests).sum::<u64>(),
            2
        );
        ring.at(60).pass += 1;
        let hour = ring.last_hour(60);
        assert_eq!(
            hour[MINUTES - 1],
            Minute {
                pass: 1,
                ..Minute::default()
            }
        );
        assert_eq!(hour[MINUTES - 58].miss, 2, "minute 3");
        // Long idle: nothing left.
        assert_eq!(ring.last_hour(500), [Minute::default(); MINUTES]);
        assert_eq!(
            Minute {
                hit: 1,
                miss: 3,
                ..Minute::default()
            }
            .hit_ratio(),
            Some(0.25)
        );
        assert_eq!(Minute::default().hit_ratio(), None);
    }
}
