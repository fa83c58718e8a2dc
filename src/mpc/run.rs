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
    let (r0, r1, d, ()) = run_with_client(program, |_links| ());
    (r0, r1, d)
}

/// As [`run_local`], plus a client thread (the data owner) linked to both parties; `client`
/// gets its links to P0 and P1, in that order.
pub fn run_with_client<T: Send + 'static, C: Send + 'static>(
    program: impl Fn(&mut Party) -> T + Send + Sync + 'static,
    client: impl FnOnce([Box<dyn Channel>; 2]) -> C + Send + 'static,
) -> ((T, Party), (T, Party), DealerStats, C) {
    let (cl0, p0_cl) = LocalChannel::pair();
    let (cl1, p1_cl) = LocalChannel::pair();
    let client_thread = std::thread::spawn(move || client([Box::new(cl0) as Box<dyn Channel>, Box::new(cl1)]));
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
        let mut p = Party::new(0, Box::new(c0), DealerLink::new(0, s0, None)).with_client(Box::new(p0_cl));
        let out = pr(&mut p);
        p.flush_time();
        p.hang_up_peer();
        drop(p.take_client());
        (out, p)
    });
    let t1 = std::thread::spawn(move || {
        let mut p =
            Party::new(1, Box::new(c1), DealerLink::new(1, s1, Some(Box::new(p1_end)))).with_client(Box::new(p1_cl));
        let out = program(&mut p);
        p.flush_time();
        p.hang_up_peer();
        p.hang_up_dealer();
        drop(p.take_client());
        (out, p)
    });
    let r0 = t0.join().expect("P0 panicked");
    let r1 = t1.join().expect("P1 panicked");
    let d = dealer_thread.join().expect("dealer panicked");
    let c = client_thread.join().expect("client panicked");
    (r0, r1, d, c)
}

/// Split a public ring tensor into two uniformly random additive shares.
pub fn share_public(x: &RingTensor) -> (RingTensor, RingTensor) {
    let mask = Prg::new(Seed::random(), 0).ring(&x.shape);
    (x.sub(&mask), mask)
}
