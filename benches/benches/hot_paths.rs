//! Hot paths of ingest, measured in bytes per second: frame decoding, the offset rule, the
//! stream checksum, and appending to a staging file.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tailrace_protocol::{apply_offset_rule, Data, Decoder, Frame, JobId, StepId, StreamHasher, StreamTag};
use tailrace_storage::{Durability, LiveTier, StagingTier, StepKey};

const CHUNK: usize = 64 * 1024;

fn wire(chunks: usize) -> Bytes {
    let mut buf = BytesMut::new();
    for i in 0..chunks {
        Frame::Data(Data {
            offset: (i * CHUNK) as u64,
            timestamp_us: 0,
            stream: StreamTag::Stdout,
            bytes: Bytes::from(vec![b'x'; CHUNK]),
        })
        .encode(&mut buf);
    }
    buf.freeze()
}

fn decode(c: &mut Criterion) {
    let wire = wire(256);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("decode_64KiB_data_frames", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(&wire[..]);
            let d = Decoder::default();
            let mut n = 0;
            while let Ok(Some(Frame::Data(data))) = d.decode(&mut buf) {
                n += data.bytes.len();
            }
            n
        })
    });
    g.finish();
}

fn offset_rule_and_checksum(c: &mut Criterion) {
    let data = vec![7u8; 1 << 20];
    let mut g = c.benchmark_group("ingest_rule");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("offset_rule_and_xxh3_1MiB", |b| {
        b.iter(|| {
            let mut h = StreamHasher::new();
            let mut hwm = 0u64;
            for chunk in data.chunks(CHUNK) {
                if let tailrace_protocol::OffsetDecision::Append { skip } = apply_offset_rule(hwm, hwm, chunk.len()) {
                    h.update(&chunk[skip..]);
                    hwm += (chunk.len() - skip) as u64;
                }
            }
            h.hex()
        })
    });
    g.finish();
}

fn staging_append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let chunk = Bytes::from(vec![b'y'; CHUNK]);
    let mut g = c.benchmark_group("staging");
    g.throughput(Throughput::Bytes((CHUNK * 64) as u64));
    g.sample_size(20);
    for durability in [Durability::Os, Durability::Fsync] {
        g.bench_with_input(BenchmarkId::new("append_4MiB_then_sync", format!("{durability:?}")), &durability, |b, &d| {
            let dir = tempfile::tempdir().expect("tempdir");
            let tier = StagingTier::new(dir.path(), d).expect("tier");
            let key = StepKey::new(JobId::new("bench").expect("id"), StepId::new("s").expect("id"));
            let mut offset = 0u64;
            b.to_async(&rt).iter(|| {
                let (tier, key, chunk) = (&tier, &key, chunk.clone());
                let start = offset;
                offset += (CHUNK * 64) as u64;
                async move {
                    for i in 0..64u64 {
                        tier.append(key, start + i * CHUNK as u64, 0, chunk.clone()).await.expect("append");
                    }
                    tier.sync(key).await.expect("sync")
                }
            });
        });
    }
    g.finish();
}

/// JUnit parsing of large real files from the corpus (MB/s of XML).
fn junit_parse(c: &mut Criterion) {
    use tailrace_ingest::results::{parse_junit, JunitLimits};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/junit/");
    let mut g = c.benchmark_group("junit_parse");
    for (name, path) in [
        ("junit-report-huge", "junit-plugin/src__test__resources__hudson__tasks__junit__junit-report-huge.xml"),
        ("jest-test-results", "test-reporter/__tests____fixtures__external__jest__jest-test-results.xml"),
        ("eclipse-plugin", "junit-plugin/src__test__resources__hudson__tasks__junit__eclipse-plugin-test-report.xml"),
    ] {
        let Ok(xml) = std::fs::read(format!("{dir}{path}")) else { continue };
        g.throughput(Throughput::Bytes(xml.len() as u64));
        g.bench_function(name, |b| b.iter(|| parse_junit(&xml[..], &JunitLimits::default()).map(|p| p.tests.len()).unwrap_or(0)));
    }
    g.finish();
}

criterion_group!(benches, decode, offset_rule_and_checksum, staging_append, junit_parse);
criterion_main!(benches);
