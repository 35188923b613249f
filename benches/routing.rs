//! Cross-core forwarding: the round trip of a batch of requests to another
//! core's mailbox and of its replies back, without the ring wake-up (both
//! threads poll), so the figure is the cost of the queues and batches alone.

use corecache::keyhash::{key_hash, owner};
use corecache::server::routing::{Batch, ItemKind, Mailbox, Message};
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn forward_batch(requests: usize) -> Batch {
    let mut batch = Batch::default();
    for i in 0..requests {
        // The hash rides along as the sender computed it when routing; its
        // value does not matter here.
        let fragment = ItemKind::GetFragment {
            with_cas: false,
            touch: false,
        };
        batch.push(7, i as u64, fragment, Some(i as u64), |b| {
            b.extend_from_slice(format!("user:{i:06}").as_bytes())
        });
    }
    batch
}

fn bench_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("forward_round_trip");
    for requests in [1usize, 16] {
        // Core 0 sends to core 1's mailbox; core 1 answers into core 0's.
        let mailboxes = Arc::new([Mailbox::new(2), Mailbox::new(2)]);
        let stop = Arc::new(AtomicBool::new(false));
        let owner = {
            let mailboxes = Arc::clone(&mailboxes);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    mailboxes[1].drain(|from, message| {
                        let Message::Forward(batch) = message else {
                            return;
                        };
                        let mut replies = Batch::default();
                        for item in &batch.items {
                            let start = replies.bytes.len();
                            replies.bytes.extend_from_slice(b"VALUE k 0 1\r\nx\r\n");
                            replies.seal(item.conn, item.seq, start, ItemKind::Request);
                        }
                        mailboxes[from].post(1, Message::Reply(replies));
                    });
                    std::hint::spin_loop();
                }
            })
        };
        group.throughput(Throughput::Elements(requests as u64));
        group.bench_function(format!("batch_of_{requests}"), |b| {
            b.iter(|| {
                mailboxes[1].post(0, Message::Forward(forward_batch(requests)));
                let mut answered = 0;
                while answered < requests {
                    mailboxes[0].drain(|_, message| {
                        if let Message::Reply(batch) = message {
                            answered += batch.items.len();
                        }
                    });
                    std::hint::spin_loop();
                }
            })
        });
        stop.store(true, Ordering::Relaxed);
        owner.join().unwrap();
    }
    group.finish();
}

/// What routing a key costs: its hash, and the jump hash that picks its
/// owner among `cores` (what a request saves for each time it is not
/// computed again).
fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    let keys: Vec<Vec<u8>> = (0..1024)
        .map(|i| format!("key:{i:010}").into_bytes())
        .collect();
    group.throughput(Throughput::Elements(keys.len() as u64));
    group.bench_function("key_hash_14_bytes", |b| {
        b.iter(|| {
            keys.iter()
                .fold(0u64, |acc, k| acc ^ key_hash(black_box(k)))
        })
    });
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    for cores in [4usize, 16, 64] {
        group.bench_function(format!("owner_of_{cores}_cores"), |b| {
            b.iter(|| {
                hashes
                    .iter()
                    .fold(0usize, |acc, &h| acc ^ owner(black_box(h), cores))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_round_trip, bench_route);
criterion_main!(benches);
