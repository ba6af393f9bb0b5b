//! Hot paths, measured in bytes per second: frame decoding, the offset rule, the stream
//! checksum, appending to a staging file, archive segment encoding and ranged decoding (on the
//! load generator's CI corpus), and JUnit parsing.

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

/// Archive segments on realistic CI output (the load generator's corpus): compressing 256 KiB
/// frames at levels 1 and 3, counting their newlines for the line index, and a 64 KiB ranged
/// read from the middle of a 16 MiB segment (find the covering frames, decompress them, cut the
/// range).
fn segment(c: &mut Criterion) {
    use tailrace_storage::segment::{compress_frame, covering, decompress_frames, FrameEntry, FRAME_INPUT};
    let corpus = tailrace_load::corpus::generate(1, 16 << 20);
    let mut g = c.benchmark_group("segment");
    g.throughput(Throughput::Bytes(corpus.len() as u64));
    g.sample_size(10);
    for level in [1, 3] {
        g.bench_with_input(BenchmarkId::new("compress_16MiB", format!("level{level}")), &level, |b, &level| {
            b.iter(|| corpus.chunks(FRAME_INPUT).map(|f| compress_frame(f, level).expect("compress").0.len()).sum::<usize>())
        });
    }
    // The line index's count per frame, and the plain filtered count it replaced.
    g.bench_function("count_newlines_16MiB", |b| {
        b.iter(|| corpus.chunks(FRAME_INPUT).map(tailrace_storage::segment::count_newlines).sum::<usize>())
    });
    g.bench_function("count_newlines_16MiB_filtered", |b| {
        b.iter(|| corpus.chunks(FRAME_INPUT).map(|f| f.iter().filter(|&&x| x == b'\n').count()).sum::<usize>())
    });
    let (mut object, mut frames) = (Vec::new(), Vec::<FrameEntry>::new());
    for f in corpus.chunks(FRAME_INPUT) {
        let (bytes, entry) = compress_frame(f, 1).expect("compress");
        object.extend_from_slice(&bytes);
        frames.push(entry);
    }
    const RANGE: u64 = 64 * 1024;
    let start = corpus.len() as u64 / 2 + 12_345;
    g.throughput(Throughput::Bytes(RANGE));
    g.sample_size(50);
    g.bench_function("ranged_read_64KiB", |b| {
        b.iter(|| {
            let span = covering(&frames, start, start + RANGE);
            let r = span.object_range.start as usize..span.object_range.end as usize;
            let plain = decompress_frames(&object[r], &span.frames).expect("decompress");
            let from = (start - span.first_offset) as usize;
            assert_eq!(&plain[from..from + RANGE as usize], &corpus[start as usize..(start + RANGE) as usize]);
        })
    });
    g.finish();
}

/// Secret masking in the agent on the corpus in 64 KiB writes: without secrets (every `tailrace
/// run` pays this), with three secrets (each in its eleven-odd encodings) that never occur, and
/// with one that occurs in most writes.
fn masking(c: &mut Criterion) {
    use tailrace_agent::mask::{Patterns, StreamMasker};
    let corpus = Bytes::from(tailrace_load::corpus::generate(2, 16 << 20));
    let mut g = c.benchmark_group("mask");
    g.throughput(Throughput::Bytes(corpus.len() as u64));
    g.sample_size(10);
    let none = Patterns::default();
    let mut absent = Patterns::default();
    for s in [&b"ghp_16C7e42F292c6912E7710c838347Ae178B4a"[..], b"AKIAIOSFODNN7EXAMPLE", b"hunter2-deploy-key"] {
        absent.add(s);
    }
    let mut present = absent.clone();
    present.add(b"Compiling");
    for (name, patterns) in [("no_secrets", none), ("3_secrets_absent", absent), ("secret_in_every_write", present)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let (mut p, mut m) = (patterns.clone(), StreamMasker::new());
                let mut n = 0;
                for at in (0..corpus.len()).step_by(64 * 1024) {
                    n += m.push(&mut p, &corpus.slice(at..(at + 64 * 1024).min(corpus.len()))).len();
                }
                n + m.finish(&mut p).len()
            })
        });
    }
    g.finish();
}

/// Masking at ingest from secret digests on the corpus in 64 KiB chunks: one and three
/// registered secrets (of different lengths) that never occur.
fn ingest_masking(c: &mut Criterion) {
    use tailrace_ingest::mask::mask_chunk;
    use tailrace_protocol::secret::{DigestSet, SecretDigest};
    let corpus = Bytes::from(tailrace_load::corpus::generate(2, 16 << 20));
    let mut g = c.benchmark_group("ingest_mask");
    g.throughput(Throughput::Bytes(corpus.len() as u64));
    g.sample_size(10);
    let secrets: [&[u8]; 3] = [b"ghp_16C7e42F292c6912E7710c838347Ae178B4a", b"AKIAIOSFODNN7EXAMPLE", b"hunter2-deploy-key"];
    for n in [1, 3] {
        let set = DigestSet::new(&secrets[..n].iter().map(|s| SecretDigest::of(s)).collect::<Vec<_>>()).expect("valid digests");
        g.bench_function(format!("{n}_digests_absent"), |b| {
            b.iter(|| {
                let mut masked = 0;
                let look = set.longest() - 1;
                for at in (0..corpus.len()).step_by(64 * 1024) {
                    let chunk = corpus.slice(at..(at + 64 * 1024).min(corpus.len()));
                    let before = &corpus[at.saturating_sub(look)..at];
                    masked += usize::from(mask_chunk(&set, before, at as u64, &chunk).stored.is_some());
                }
                masked
            })
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

criterion_group!(benches, decode, offset_rule_and_checksum, staging_append, segment, masking, ingest_masking, junit_parse);
criterion_main!(benches);
