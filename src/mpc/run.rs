//! Run a two-party program in-process: P0, P1 and the dealer as threads of one process.

use super::channel::{Channel, LocalChannel};
use super::dealer::{Dealer, DealerLink};
use super::party::Party;
use super::prg::{Prg, Seed};
use super::ring::RingTensor;

/// What the dealer did during a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct DealerStats {
    pub requests: u64,
    pub bytes_sent: u64,
}

/// Run `program` as P0 and P1 (each gets its party context), with a dealer thread serving P1.
pub fn run_local<T: Send + 'static>(
    program: impl Fn(&mut Party) -> T + Send + Sync + 'static,
) -> ((T, Party), (T, Party), DealerStats) {
    let (dealer, s0, s1) = Dealer::new();
    let (c0, c1) = LocalChannel::pair();
    let (d_end, p1_end) = LocalChannel::pair();
    let program = std::sync::Arc::new(program);
    let dealer_thread = std::thread::spawn(move || {
        let mut d_end = d_end;
        let d = dealer.serve(&mut d_end as &mut dyn Channel);
        DealerStats { requests: d.requests, bytes_sent: d.bytes_sent }
    });
    let pr = program.clone();
    let t0 = std::thread::spawn(move || {
        let mut p = Party::new(0, Box::new(c0), DealerLink::new(0, s0, None));
        let out = pr(&mut p);
        (out, p)
    });
    let t1 = std::thread::spawn(move || {
        let mut p = Party::new(1, Box::new(c1), DealerLink::new(1, s1, Some(Box::new(p1_end))));
        let out = program(&mut p);
        (out, p)
    });
    let r0 = t0.join().expect("P0 panicked");
    let mut r1 = t1.join().expect("P1 panicked");
    r1.1.hang_up_dealer();
    let d = dealer_thread.join().expect("dealer panicked");
    (r0, r1, d)
}

/// Split a public ring tensor into two uniformly random additive shares.
pub fn share_public(x: &RingTensor) -> (RingTensor, RingTensor) {
    let mask = Prg::new(Seed::random(), 0).ring(&x.shape);
    (x.sub(&mask), mask)
}
