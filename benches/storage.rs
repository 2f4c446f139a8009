//! Microbenchmarks of the produce path's CPU work: validating a produced
//! batch (CRC-32C over every byte), assigning its offsets, and looking up
//! the sparse offset index. Run: `cargo bench --bench storage`.

use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use tidelog::storage::batch::{assign, encode_test_batch, validate_produced};
use tidelog::storage::offset_index::OffsetIndex;
use tidelog::types::{FilePosition, Offset, RelativeOffset};

fn batch_validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_produced");
    for (records, value_bytes) in [(1usize, 100usize), (16, 1024), (64, 1024), (16, 65_536)] {
        let value = vec![0x42u8; value_bytes];
        let values: Vec<&[u8]> = (0..records).map(|_| value.as_slice()).collect();
        let batch = encode_test_batch(&values, 1_700_000_000_000);
        group.throughput(Throughput::Bytes(batch.len() as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(format!("{records}x{value_bytes}B")),
            &batch,
            |b, batch| b.iter(|| validate_produced(black_box(batch), 16 << 20).expect("valid")),
        );
    }
    group.finish();
}

fn offset_assignment(c: &mut Criterion) {
    let value = vec![0x42u8; 1024];
    let values: Vec<&[u8]> = (0..16).map(|_| value.as_slice()).collect();
    let batch = encode_test_batch(&values, 1_700_000_000_000);
    let mut group = c.benchmark_group("assign");
    group.throughput(Throughput::Bytes(batch.len() as u64));
    group.bench_function("16x1KiB", |b| {
        b.iter(|| assign(black_box(&batch), Offset(123_456), 0))
    });
    group.finish();
}

fn index_lookup(c: &mut Criterion) {
    // A million entries: a 2 GiB segment indexed every 2 KiB.
    let mut index = OffsetIndex::default();
    for entry in 0..1_000_000u32 {
        index.append(
            RelativeOffset(entry * 4 + 3),
            FilePosition(u64::from(entry) * 2048 + 1),
        );
    }
    c.bench_function("offset_index_lookup/1M entries", |b| {
        let mut target = 0u32;
        b.iter(|| {
            target = target.wrapping_mul(1_103_515_245).wrapping_add(12_345) % 5_000_000;
            black_box(index.lookup(RelativeOffset(target)))
        })
    });
}

criterion_group!(benches, batch_validation, offset_assignment, index_lookup);
criterion_main!(benches);
