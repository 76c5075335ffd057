//! [`Padded`]: keeps a value on cache lines of its own, so that a field one thread writes on
//! every event does not slow down the fields another thread reads (false sharing); and
//! [`Striped`]: a value per group of threads, for counters every thread bumps.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A value aligned to 128 bytes (two cache lines, as adjacent-line prefetchers pair them).
#[derive(Debug, Default)]
#[repr(align(128))]
#[doc(hidden)]
pub struct Padded<T>(pub T);

impl<T> Deref for Padded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Stripes of a value, one per group of threads, so that threads updating counters on every
/// event do not contend for one cache line. Each stripe is allocated on first use, so an idle
/// function costs one pointer per stripe. Readers sum over [`Striped::iter`].
#[derive(Debug)]
#[doc(hidden)]
pub struct Striped<T> {
    stripes: Box<[std::sync::OnceLock<Box<Padded<T>>>]>,
}

const STRIPES: usize = 16;

thread_local! {
    /// This thread's stripe, assigned round-robin when the thread first asks.
    static STRIPE: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES
    };
}

impl<T: Default> Default for Striped<T> {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }
}

impl<T: Default> Striped<T> {
    /// The calling thread's stripe.
    pub fn local(&self) -> &T {
        let index = STRIPE.with(|s| *s);
        self.stripes[index].get_or_init(|| Box::new(Padded(T::default())))
    }

    /// Every stripe in use.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.stripes.iter().filter_map(|s| s.get().map(|b| &b.0))
    }

    /// The sum over the stripes in use of one counter of each.
    pub fn sum(&self, counter: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.iter()
            .map(|stripe| counter(stripe).load(Ordering::Relaxed))
            .sum()
    }
}
