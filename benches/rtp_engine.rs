//! Media engine benchmark with real UDP: CPU per relayed two-party G.711
//! call through the room tasks, and the latency a room adds.
//!
//!     cargo bench --bench rtp_engine                 (200 calls, 10 s)
//!     cargo bench --bench rtp_engine -- 100 5        (calls, seconds)
//!     cargo bench --bench rtp_engine -- 200 10 --floor
//!     COALESCE_US=3000 cargo bench --bench rtp_engine   (media.coalesce_us)
//!
//! `--floor` replaces the engine by the least a relay can do: a bare
//! edge-triggered `epoll` loop on one thread that reads each datagram
//! (`recvfrom` until `EAGAIN`) and sends it unchanged (`sendto`) from the
//! other socket of its call to the other phone; no RTP parsing, no room.
//! `--floor-level` is the same loop level-triggered: one `recvfrom` per
//! event, none ending in `EAGAIN` (what the engine's media threads do).
//! `--connected` (with any floor) connects each socket to its phone and
//! sends without an address: the kernel keeps the route instead of looking
//! it up per datagram. `--floor-uring` is the least an `io_uring` relay does: a
//! multishot `recvmsg` per socket into provided buffers (with the source
//! address, as latching needs), sends submitted as `IORING_OP_SEND`s with a
//! destination, one `io_uring_enter` per pass (`DEFER_TASKRUN`).
//! Same generator, same sockets per call, so the modes run in the same
//! minutes give the engine's cost over the kernel's own (loopback delivery
//! included) on this machine.
//!
//! It also prints the heap the engine holds per call (a counting global
//! allocator; every thread's allocations but the generator's).
//!
//! The engine runs with one media thread (`media.threads: 1`), set up from
//! a current-thread tokio runtime on a thread of its own; the CPU time is
//! the media thread's, from `/proc/self/task/*/schedstat` (ns) read before
//! and after the measured window (the floor's: its own thread's). A load
//! generator thread plays both phones of every call over loopback: one
//! 172-byte PCMU packet per phone every 20 ms (100 packets in and 100 out
//! per call per second at the engine), each payload stamped with its send
//! time, and reads what comes back. Relaying passes payloads through
//! untouched, so the stamp in a received payload gives the latency from
//! input packet to output packet.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use switchboard::media::codec::CodecSpec;
use switchboard::media::engine::{Command, MediaConfig, MediaEngine, RoomHandle};
use switchboard::media::rtp::{RtpLeg, RtpLegConfig};
use switchboard::media::sdp::Direction;
use switchboard::media::{ParticipantConfig, ParticipantId, RoomConfig};
use switchboard::metrics::Metrics;

/// Counts the heap bytes live that every thread but the generator's
/// allocated (the media engine's memory per call: its media thread and the
/// thread that sets the rooms up).
struct Counting;
static ENGINE_HEAP: AtomicI64 = AtomicI64::new(0);
thread_local! {
    static ON_GENERATOR: Cell<bool> = const { Cell::new(false) };
}

fn count(delta: i64) {
    if !ON_GENERATOR.with(Cell::get) {
        ENGINE_HEAP.fetch_add(delta, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size() as i64);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(-(l.size() as i64));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, n) };
        if !q.is_null() {
            count(n as i64 - l.size() as i64);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn schedstat_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn thread_cpu_ns() -> u64 {
    schedstat_ns("/proc/thread-self/schedstat")
}

/// CPU time of the engine's media threads (`media-N`), ns.
fn media_threads_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with("media-"))
        })
        .map(|t| schedstat_ns(&t.path().join("schedstat").to_string_lossy()))
        .sum()
}

struct Phone {
    socket: UdpSocket,
    to: SocketAddr,
    seq: u16,
    ts: u32,
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let calls: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(200);
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let level = std::env::args().any(|a| a == "--floor-level");
    let uring = std::env::args().any(|a| a == "--floor-uring");
    let connected = std::env::args().any(|a| a == "--connected");
    let floor = level || uring || std::env::args().any(|a| a == "--floor");
    assert!(!connected || floor, "--connected is a floor setting");
    ON_GENERATOR.with(|on| on.set(true));
    let epoch = Instant::now();

    // The engine and its rooms on one thread.
    let (setup_tx, setup_rx) = std::sync::mpsc::channel();
    let (cpu_tx, cpu_rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let (measure_tx, measure_rx) = std::sync::mpsc::channel::<()>();
    let done = Arc::new(AtomicBool::new(false));
    // Named, so that `perf report --comm engine` shows this thread alone.
    let engine_thread = {
        let done = done.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || {
                if uring {
                    uring_relay(calls, connected, setup_tx, measure_rx, cpu_tx, &done)
                } else if floor {
                    bare_relay(calls, level, connected, setup_tx, measure_rx, cpu_tx, &done)
                } else {
                    engine_relay(calls, setup_tx, measure_rx, cpu_tx, &done)
                }
            })
            .unwrap()
    };

    let phones = setup_rx.recv().unwrap();
    let mut phones: Vec<Phone> = phones
        .into_iter()
        .map(|(socket, to)| {
            socket.set_nonblocking(true).unwrap();
            Phone {
                socket,
                to,
                seq: 0,
                ts: 0,
            }
        })
        .collect();
    let warmup = Duration::from_secs(2);
    let total = warmup + Duration::from_secs(seconds);
    let mut latencies: Vec<u32> = Vec::with_capacity(phones.len() * 50 * seconds as usize);
    let mut sent = 0u64;
    let mut received = 0u64;
    let start = Instant::now();
    let mut next = start;
    let mut measuring = false;
    let mut packet = [0u8; 172];
    let mut buf = [0u8; 2048];
    while start.elapsed() < total {
        if !measuring && start.elapsed() >= warmup {
            measuring = true;
            measure_tx.send(()).unwrap();
        }
        let now_ns = epoch.elapsed().as_nanos() as u64;
        for p in &mut phones {
            packet[0] = 0x80;
            packet[1] = 0;
            packet[2..4].copy_from_slice(&p.seq.to_be_bytes());
            packet[4..8].copy_from_slice(&p.ts.to_be_bytes());
            packet[8..12].copy_from_slice(&0x0bad_cafeu32.to_be_bytes());
            packet[12..20].copy_from_slice(&now_ns.to_be_bytes());
            packet[20..].fill(0xff);
            let _ = p.socket.send_to(&packet, p.to);
            p.seq = p.seq.wrapping_add(1);
            p.ts = p.ts.wrapping_add(160);
            if measuring {
                sent += 1;
            }
        }
        next += Duration::from_millis(20);
        // Read until the next send time.
        loop {
            let mut any = false;
            for p in &phones {
                while let Ok(n) = p.socket.recv(&mut buf) {
                    any = true;
                    if n >= 20 && buf[1] & 0x7f == 0 && measuring {
                        let stamp = u64::from_be_bytes(buf[12..20].try_into().unwrap());
                        let now = epoch.elapsed().as_nanos() as u64;
                        latencies.push((now.saturating_sub(stamp) / 1000) as u32);
                        received += 1;
                    }
                }
            }
            if Instant::now() >= next {
                break;
            }
            if !any {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let (cpu0, t0) = cpu_rx.recv().unwrap();
    let (cpu1, t1) = cpu_rx.recv().unwrap();
    let targets = engine_thread.join().unwrap();
    let wall = t1.duration_since(t0).as_secs_f64();
    let cpu = (cpu1 - cpu0) as f64 / 1e9;
    latencies.sort_unstable();
    let pct = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let mean_target =
        targets.iter().map(|&t| f64::from(t)).sum::<f64>() / targets.len().max(1) as f64;
    let packets_per_s = 200.0 * calls as f64;
    let what = if floor {
        if uring {
            "bare io_uring relay (--floor-uring)"
        } else if level {
            "bare level-triggered epoll relay (--floor-level)"
        } else {
            "bare edge-triggered epoll relay (--floor)"
        }
    } else {
        "media thread"
    };
    let what = if connected {
        format!("{what}, connected sockets")
    } else {
        what.to_string()
    };
    println!("calls: {calls}, measured {wall:.1} s, {what} thread CPU {cpu:.3} s");
    println!(
        "CPU per call: {:.4} % of one core ({:.2} µs per packet in+out, {:.0} packets/s through the {what})",
        100.0 * cpu / wall / calls as f64,
        cpu / wall / packets_per_s * 1e6,
        packets_per_s
    );
    println!(
        "delivered {received} of {sent} packets ({:.2} % loss)",
        100.0 * (1.0 - received as f64 / sent.max(1) as f64)
    );
    println!(
        "latency input→output ms: min {:.2}  p50 {:.2}  p99 {:.2}  max {:.2}",
        pct(0.0),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    // Relay mode forwards on receipt: no jitter buffer delay to subtract.
    // (The buffer's target is printed for runs where the room mixes.)
    println!("jitter buffer target (unused while relaying) {mean_target:.1} ms");
}

/// The media engine (one media thread), set up from a current-thread tokio
/// runtime: `calls` two-party PCMU rooms in relay mode, each side an
/// [`RtpLeg`] facing a phone socket.
/// Returns the rooms' jitter buffer targets.
fn engine_relay(
    calls: usize,
    setup_tx: std::sync::mpsc::Sender<Vec<(UdpSocket, SocketAddr)>>,
    measure_rx: std::sync::mpsc::Receiver<()>,
    cpu_tx: std::sync::mpsc::Sender<(u64, Instant)>,
    done: &AtomicBool,
) -> Vec<u32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let base = 61_000u16; // above Linux's ephemeral range (32768-60999)
        let cfg = MediaConfig {
            bind: [127, 0, 0, 1].into(),
            rtp_ports: format!("{base}-{}", base + 4 * calls as u16 + 400),
            media_timeout_secs: 3600,
            threads: 1,
            coalesce_us: std::env::var("COALESCE_US")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(MediaConfig::default().coalesce_us),
            ..MediaConfig::default()
        };
        let engine = MediaEngine::new(cfg, Arc::new(Metrics::default())).unwrap();
        let heap0 = ENGINE_HEAP.load(Ordering::Relaxed);
        let mut rooms: Vec<RoomHandle> = Vec::new();
        let mut phones = Vec::new();
        for _ in 0..calls {
            let room = engine.create_room(RoomConfig::default()).unwrap();
            for side in 0..2 {
                let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
                let ports = engine.allocate_ports().unwrap();
                let leg_addr: SocketAddr = ports.rtp.local_addr().unwrap();
                let leg = RtpLeg::new(
                    RtpLegConfig {
                        remote_rtp: Some(phone.local_addr().unwrap()),
                        remote_rtcp: None,
                        local_direction: Direction::SendRecv,
                        peer_sends: true,
                        clock_rate: 8000,
                        media_timeout: Duration::from_secs(3600),
                        relatch_after: Duration::from_secs(1),
                        rtcp_interval: Duration::from_secs(5),
                        ssrc: rand::random(),
                        cname: "bench".into(),
                    },
                    Instant::now(),
                );
                room.add(
                    ParticipantId(side),
                    Box::new(leg),
                    ports.into(),
                    ParticipantConfig::new(CodecSpec::pcmu()),
                    None,
                )
                .await
                .unwrap();
                phones.push((phone, leg_addr));
            }
            rooms.push(room);
        }
        let heap1 = ENGINE_HEAP.load(Ordering::Relaxed);
        setup_tx.send(phones).unwrap();
        // Measure when the generator says the warm-up is over.
        let measure = tokio::task::spawn_blocking(move || measure_rx.recv());
        let _ = measure.await;
        let heap2 = ENGINE_HEAP.load(Ordering::Relaxed);
        let per_call = |h: i64| (h - heap0) as f64 / calls as f64 / 1024.0;
        println!(
            "engine heap per call (rooms, legs; sockets are kernel memory): \
             {:.1} KiB set up, {:.1} KiB after 2 s of traffic",
            per_call(heap1),
            per_call(heap2)
        );
        cpu_tx
            .send((media_threads_cpu_ns(), Instant::now()))
            .unwrap();
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        cpu_tx
            .send((media_threads_cpu_ns(), Instant::now()))
            .unwrap();
        let mut targets = Vec::new();
        for room in &rooms {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let _ = room.send(Command::JitterStats(ParticipantId(0), tx)).await;
            if let Ok(Some(stats)) = rx.await {
                targets.push(stats.target_delay_ms);
            }
        }
        targets
    })
}

/// The floors' sockets: socket `2k` and `2k + 1` are call `k`'s two
/// sides; a datagram read on one is sent from the other to that side's
/// phone (`to`, as the C library takes it). The phones go to the generator.
/// With `connected`, each relay socket is connected to its phone (sends
/// then need no address).
fn relay_sockets(
    calls: usize,
    connected: bool,
    setup_tx: &std::sync::mpsc::Sender<Vec<(UdpSocket, SocketAddr)>>,
) -> (Vec<UdpSocket>, Vec<libc::sockaddr_in>) {
    let mut sockets = Vec::with_capacity(2 * calls);
    let mut phones = Vec::with_capacity(2 * calls);
    let mut to = Vec::with_capacity(2 * calls);
    for _ in 0..2 * calls {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(a) = phone.local_addr().unwrap() else {
            unreachable!()
        };
        to.push(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        });
        phones.push((phone, s.local_addr().unwrap()));
        if connected {
            s.connect(a).unwrap();
        }
        sockets.push(s);
    }
    setup_tx.send(phones).unwrap();
    (sockets, to)
}

/// `--floor` and `--floor-level`: the bare `epoll` relay (see the module
/// comment); `--connected`: sends without an address from sockets
/// connected to their phones.
fn bare_relay(
    calls: usize,
    level: bool,
    connected: bool,
    setup_tx: std::sync::mpsc::Sender<Vec<(UdpSocket, SocketAddr)>>,
    measure_rx: std::sync::mpsc::Receiver<()>,
    cpu_tx: std::sync::mpsc::Sender<(u64, Instant)>,
    done: &AtomicBool,
) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let (sockets, to) = relay_sockets(calls, connected, &setup_tx);
    // SAFETY: plain system calls on sockets this function owns, with buffers
    // that outlive each call.
    unsafe {
        let ep = libc::epoll_create1(0);
        assert!(ep >= 0);
        for (i, s) in sockets.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: if level {
                    libc::EPOLLIN as u32
                } else {
                    (libc::EPOLLIN | libc::EPOLLET) as u32
                },
                u64: i as u64,
            };
            assert_eq!(
                libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev),
                0
            );
        }
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
        let mut buf = [0u8; 2048];
        let mut measuring = false;
        while !done.load(Ordering::Relaxed) {
            if !measuring && measure_rx.try_recv().is_ok() {
                measuring = true;
                cpu_tx.send((thread_cpu_ns(), Instant::now())).unwrap();
            }
            let n = libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 5);
            for ev in &events[..n.max(0) as usize] {
                let i = ev.u64 as usize;
                let from = sockets[i].as_raw_fd();
                let out = i ^ 1;
                loop {
                    let r = libc::recvfrom(
                        from,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        std::ptr::null_mut(),
                        std::ptr::null_mut(),
                    );
                    if r < 0 {
                        break;
                    }
                    if connected {
                        libc::send(sockets[out].as_raw_fd(), buf.as_ptr().cast(), r as usize, 0);
                    } else {
                        libc::sendto(
                            sockets[out].as_raw_fd(),
                            buf.as_ptr().cast(),
                            r as usize,
                            0,
                            (&to[out] as *const libc::sockaddr_in).cast(),
                            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                        );
                    }
                    if level {
                        // Level-triggered: epoll reports the socket again
                        // while it holds more, so no read ends in EAGAIN.
                        break;
                    }
                }
            }
        }
        cpu_tx.send((thread_cpu_ns(), Instant::now())).unwrap();
        libc::close(ep);
    }
    Vec::new()
}

/// `--floor-uring`: the bare relay on `io_uring` (module comment). A
/// multishot `recvmsg` per socket (with the source address, which latching
/// needs) fills buffers from a provided-buffer ring; each datagram goes out
/// from the other socket of its call by an `IORING_OP_SEND` with a
/// destination (none with `--connected`: the sockets are connected to
/// their phones); the buffer returns to the ring when the send completes.
/// One `io_uring_enter` per pass submits the sends and waits for more;
/// completions run only then (`DEFER_TASKRUN`).
fn uring_relay(
    calls: usize,
    connected: bool,
    setup_tx: std::sync::mpsc::Sender<Vec<(UdpSocket, SocketAddr)>>,
    measure_rx: std::sync::mpsc::Receiver<()>,
    cpu_tx: std::sync::mpsc::Sender<(u64, Instant)>,
    done: &AtomicBool,
) -> Vec<u32> {
    use io_uring::{IoUring, cqueue, opcode, squeue, types};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicU16;
    const ENTRIES: u16 = 4096;
    const BUF: usize = 2048;
    const SEND: u64 = 1 << 32;
    let (sockets, to) = relay_sockets(calls, connected, &setup_tx);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(4 * u32::from(ENTRIES))
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(u32::from(ENTRIES))
        .expect("io_uring (kernel 6.1 or later, not disabled by sysctl or seccomp)");
    // Queued entries go in as the submission queue has room; when it is
    // full, what it holds is submitted first. Nothing is dropped.
    fn push_all(ring: &mut IoUring, pending: &mut Vec<squeue::Entry>) {
        let mut next = 0;
        while next < pending.len() {
            // SAFETY: every entry's buffers and addresses outlive the ring
            // (see `uring_relay`).
            while next < pending.len() && unsafe { ring.submission().push(&pending[next]) }.is_ok()
            {
                next += 1;
            }
            if next < pending.len() {
                let _ = ring.submit();
            }
        }
        pending.clear();
    }
    // The kernel owns these until it has cancelled the receives, which it
    // does on its own time after the ring closes: they are leaked, not freed.
    let bufs: &'static mut [u8] = vec![0u8; usize::from(ENTRIES) * BUF].leak();
    let bufs = bufs.as_mut_ptr();
    let ring_layout = Layout::from_size_align(usize::from(ENTRIES) * 16, 4096).unwrap();
    let hdr: &'static mut libc::msghdr = Box::leak(Box::new(
        // SAFETY: an all-zero msghdr is a valid empty one.
        unsafe { std::mem::zeroed() },
    ));
    hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
    let hdr: &'static libc::msghdr = hdr;
    // SAFETY: the buffer ring and `bufs` are leaked (above); the kernel
    // writes a buffer only while it is in the ring, and we read it only
    // after its completion took it out. Ring entries are written through
    // raw pointers; the tail is published with a release store.
    unsafe {
        let base = std::alloc::alloc_zeroed(ring_layout).cast::<types::BufRingEntry>();
        assert!(!base.is_null(), "out of memory");
        let mut tail_v = 0u16;
        let mut give_back = |bid: u16| {
            let e = base.add(usize::from(tail_v & (ENTRIES - 1)));
            (*e).set_addr(bufs.add(usize::from(bid) * BUF) as u64);
            (*e).set_len(BUF as u32);
            (*e).set_bid(bid);
            tail_v = tail_v.wrapping_add(1);
            let tail = &*types::BufRingEntry::tail(base).cast::<AtomicU16>();
            tail.store(tail_v, Ordering::Release);
        };
        for bid in 0..ENTRIES {
            give_back(bid);
        }
        ring.submitter()
            .register_buf_ring_with_flags(base as u64, ENTRIES, 0, 0)
            .unwrap();
        let recv = |i: usize| {
            opcode::RecvMsgMulti::new(types::Fd(sockets[i].as_raw_fd()), hdr, 0)
                .build()
                .user_data(i as u64)
        };
        let mut pending: Vec<squeue::Entry> = (0..sockets.len()).map(recv).collect();
        push_all(&mut ring, &mut pending);
        let ts = types::Timespec::new().nsec(5_000_000);
        let args = types::SubmitArgs::new().timespec(&ts);
        let mut measuring = false;
        while !done.load(Ordering::Relaxed) {
            if !measuring && measure_rx.try_recv().is_ok() {
                measuring = true;
                cpu_tx.send((thread_cpu_ns(), Instant::now())).unwrap();
            }
            let _ = ring.submitter().submit_with_args(1, &args);
            for cqe in ring.completion() {
                let ud = cqe.user_data();
                if ud & SEND != 0 {
                    give_back(ud as u16);
                    continue;
                }
                let i = ud as usize;
                if !cqueue::more(cqe.flags()) {
                    pending.push(recv(i)); // re-arm (out of buffers, or an error)
                }
                let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
                    continue;
                };
                let start = bufs.add(usize::from(bid) * BUF);
                let got = std::slice::from_raw_parts(start, cqe.result().max(0) as usize);
                let Ok(msg) = types::RecvMsgOut::parse(got, hdr) else {
                    give_back(bid);
                    continue;
                };
                std::hint::black_box(msg.name_data()); // the source, as latching reads it
                let payload = msg.payload_data();
                let out = i ^ 1;
                let send = opcode::Send::new(
                    types::Fd(sockets[out].as_raw_fd()),
                    payload.as_ptr(),
                    payload.len() as u32,
                );
                let send = if connected {
                    send
                } else {
                    send.dest_addr((&raw const to[out]).cast())
                        .dest_addr_len(std::mem::size_of::<libc::sockaddr_in>() as u32)
                };
                pending.push(send.build().user_data(SEND | u64::from(bid)));
            }
            push_all(&mut ring, &mut pending);
        }
        cpu_tx.send((thread_cpu_ns(), Instant::now())).unwrap();
    }
    // `to` is read by queued sends until the ring is gone: keep it as well.
    std::mem::forget(to);
    drop(ring);
    Vec::new()
}
