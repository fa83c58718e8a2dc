//! A user-space delay line for `scripts/netem.sh` on kernels without `sch_netem`: a TCP relay
//! that delivers each direction's bytes after a one-way propagation delay, serialised at a
//! fixed bandwidth (a FIFO link: a chunk starts transmitting when it arrives and the link is
//! free, and arrives `delay` after its last bit left).
//!
//! It models exactly what the cost model assumes (latency + bytes/bandwidth per flight) at the
//! byte-stream level: no TCP congestion control, no loss, no reordering.
//!
//! ```sh
//! cargo build --release --example delay_relay
//! target/release/examples/delay_relay --listen 10.0.0.1:7100 --to 127.0.0.1:7000 \
//!     --delay-ms 20 --rate-mbit 200
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Args {
    listen: String,
    to: String,
    delay: Duration,
    bits_per_s: f64,
}

fn parse() -> Result<Args, String> {
    let mut a = std::env::args().skip(1);
    let (mut listen, mut to, mut delay_ms, mut rate) = (None, None, None, None);
    while let Some(k) = a.next() {
        let v = a.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--listen" => listen = Some(v),
            "--to" => to = Some(v),
            "--delay-ms" => delay_ms = Some(v.parse::<f64>().map_err(|e| format!("--delay-ms: {e}"))?),
            "--rate-mbit" => rate = Some(v.parse::<f64>().map_err(|e| format!("--rate-mbit: {e}"))?),
            _ => return Err(format!("unknown argument {k}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        to: to.ok_or("--to is required")?,
        delay: Duration::from_secs_f64(delay_ms.ok_or("--delay-ms is required")? / 1e3),
        bits_per_s: rate.ok_or("--rate-mbit is required")? * 1e6,
    })
}

/// One direction: a reader stamps chunks with their delivery time, a writer delivers them.
fn direction(mut src: TcpStream, mut dst: TcpStream, delay: Duration, bits_per_s: f64) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = std::thread::spawn(move || {
        let mut free_at = Instant::now();
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match src.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let now = Instant::now();
            let start = free_at.max(now);
            free_at = start + Duration::from_secs_f64(n as f64 * 8.0 / bits_per_s);
            if tx.send((free_at + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
        let _ = src.shutdown(Shutdown::Read);
    });
    for (at, chunk) in rx {
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        if dst.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = dst.shutdown(Shutdown::Write);
    let _ = reader.join();
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let l = TcpListener::bind(&args.listen).unwrap_or_else(|e| {
        eprintln!("error: listening on {}: {e}", args.listen);
        std::process::exit(1);
    });
    for c in l.incoming() {
        let Ok(c) = c else { continue };
        let u = match TcpStream::connect(&args.to) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("relay {} -> {}: {e}", args.listen, args.to);
                continue;
            }
        };
        let _ = (c.set_nodelay(true), u.set_nodelay(true));
        let (c2, u2) = match (c.try_clone(), u.try_clone()) {
            (Ok(c2), Ok(u2)) => (c2, u2),
            _ => continue,
        };
        let (d, r) = (args.delay, args.bits_per_s);
        std::thread::spawn(move || direction(c, u, d, r));
        std::thread::spawn(move || direction(u2, c2, d, r));
    }
}
