/**
 * The exact average frame rate of an ISO-BMFF (mp4/mov/m4v/3gp) video track, as libavformat's mov
 * demuxer computes `AVStream.avg_frame_rate` — the number PyAV's `stream.average_rate` and decord's
 * `get_avg_fps()` report upstream. ffmpeg's CLI only prints it rounded to 2 decimals ("23.98 fps"),
 * and the npm binary has no ffprobe, so the track's sample tables are read here.
 *
 * FFmpeg `libavformat/mov.c`: `mov_read_stts` sums, per track, the samples and their durations
 * (Σ count, Σ count·delta; a delta above `max_stts_delta` = 2^32 − 1 − 480000 is a negative int32
 * written unsigned: it is clipped to 1 and the drift it leaves is taken back from later deltas);
 * `mov_read_header` then sets
 *     avg_frame_rate = av_reduce(timescale · N, Σ durations, INT_MAX)     (mdhd timescale)
 * This holds for VFR too: it is frames over total duration, not 1 / first delta.
 *
 * Not handled (the caller falls back to ffmpeg's printed value): fragmented files (`mvex` present;
 * FFmpeg adds `trun` samples read up to the first fragment), a missing/odd `moov`, zero timescale.
 */
import fs from 'node:fs';

export interface Mp4TrackTiming {
  /** Index of the `trak` in `moov` (= the ffmpeg stream index for mov files without cover art). */
  trackIndex: number;
  handler: string;
  timescale: number;
  /** Σ stts sample counts (= `nb_frames` of the stream). */
  sampleCount: number;
  /** avg_frame_rate, reduced like av_reduce(…, INT_MAX). */
  fpsNum: number;
  fpsDen: number;
}

const INT_MAX = 2n ** 31n - 1n;
/** FFmpeg's default `max_stts_delta` (UINT_MAX - 48000 * 10). */
const MAX_STTS_DELTA = 2 ** 32 - 1 - 480000;
/** We never read a `moov` larger than this into memory. */
const MAX_MOOV_BYTES = 256 * 2 ** 20;

function gcd(a: bigint, b: bigint): bigint {
  while (b) [a, b] = [b, a % b];
  return a;
}

/**
 * num/den as the closest fraction with both terms <= max: exact (after gcd) when it fits,
 * otherwise the bounded continued-fraction convergent libavutil's `av_reduce` picks.
 */
export function reduceRational(num: bigint, den: bigint, max: bigint = INT_MAX): [number, number] {
  const g = gcd(num, den);
  if (g) {
    num /= g;
    den /= g;
  }
  if (num <= max && den <= max) return [Number(num), Number(den)];
  // Convergents p/q of the continued fraction; stop before a term exceeds max, then take the
  // best semiconvergent if it is closer than the last convergent.
  let p0 = 0n, q0 = 1n, p1 = 1n, q1 = 0n;
  let n = num, d = den;
  while (d) {
    const a = n / d;
    const p2 = a * p1 + p0, q2 = a * q1 + q0;
    if (p2 > max || q2 > max) {
      let x = p1 ? (max - p0) / p1 : a;
      if (q1) x = x < (max - q0) / q1 ? x : (max - q0) / q1;
      if (d * (2n * x * q1 + q0) > n * q1) {
        p1 = x * p1 + p0;
        q1 = x * q1 + q0;
      }
      break;
    }
    [p0, q0, p1, q1] = [p1, q1, p2, q2];
    [n, d] = [d, n - a * d];
  }
  return [Number(p1), Number(q1)];
}

interface Box {
  type: string;
  /** Payload start/end within the buffer. */
  start: number;
  end: number;
}

/** Child boxes of buf[start, end). Stops (without throwing) at a malformed size. */
function boxes(buf: Buffer, start: number, end: number): Box[] {
  const out: Box[] = [];
  let p = start;
  while (p + 8 <= end) {
    let size = buf.readUInt32BE(p);
    const type = buf.toString('latin1', p + 4, p + 8);
    let hdr = 8;
    if (size === 1) {
      if (p + 16 > end) break;
      size = Number(buf.readBigUInt64BE(p + 8));
      hdr = 16;
    } else if (size === 0) {
      size = end - p;
    }
    if (size < hdr || p + size > end) break;
    out.push({ type, start: p + hdr, end: p + size });
    p += size;
  }
  return out;
}

const child = (buf: Buffer, b: Box, type: string) => boxes(buf, b.start, b.end).find((x) => x.type === type);

/** Finds `moov` among the top-level boxes and reads it; null if absent or unreasonable. */
function readMoov(fd: number, fileSize: number): Buffer | null {
  const head = Buffer.alloc(16);
  let p = 0;
  while (p + 8 <= fileSize) {
    if (fs.readSync(fd, head, 0, 16, p) < 8) return null;
    let size = head.readUInt32BE(0);
    const type = head.toString('latin1', 4, 8);
    let hdr = 8;
    if (size === 1) {
      size = Number(head.readBigUInt64BE(8));
      hdr = 16;
    } else if (size === 0) {
      size = fileSize - p;
    }
    if (size < hdr || p + size > fileSize) return null;
    if (type === 'moov') {
      if (size - hdr > MAX_MOOV_BYTES) return null;
      const buf = Buffer.alloc(size - hdr);
      if (fs.readSync(fd, buf, 0, buf.length, p + hdr) !== buf.length) return null;
      return buf;
    }
    p += size;
  }
  return null;
}

function trackTiming(buf: Buffer, trak: Box, trackIndex: number): Mp4TrackTiming | null {
  const mdia = child(buf, trak, 'mdia');
  if (!mdia) return null;
  const hdlr = child(buf, mdia, 'hdlr');
  const mdhd = child(buf, mdia, 'mdhd');
  const minf = child(buf, mdia, 'minf');
  const stbl = minf && child(buf, minf, 'stbl');
  const stts = stbl && child(buf, stbl, 'stts');
  if (!hdlr || !mdhd || !stts || hdlr.end - hdlr.start < 12 || stts.end - stts.start < 8) return null;
  const handler = buf.toString('latin1', hdlr.start + 8, hdlr.start + 12);
  const version = buf.readUInt8(mdhd.start);
  const tsAt = mdhd.start + (version === 1 ? 20 : 12);
  if (tsAt + 4 > mdhd.end) return null;
  const timescale = buf.readUInt32BE(tsAt);
  // mov_read_stts: Σ count and Σ count·delta, with the huge-delta correction.
  const entries = buf.readUInt32BE(stts.start + 4);
  let frames = 0n, duration = 0n, current = 0n, corrected = 0n;
  for (let i = 0; i < entries; i++) {
    const at = stts.start + 8 + 8 * i;
    if (at + 8 > stts.end) return null; // truncated table: let ffmpeg's number stand
    const count = BigInt(buf.readUInt32BE(at));
    const raw = buf.readUInt32BE(at + 4);
    let delta = BigInt(raw);
    if (raw > MAX_STTS_DELTA) {
      const signed = BigInt(buf.readInt32BE(at + 4));
      delta = 1n;
      corrected += (signed < 0n ? signed : 1n) * count;
    } else {
      corrected += delta * count;
    }
    current += delta * count;
    if (current > corrected) {
      const drift = (current - corrected) / (count > 0n ? count : 1n);
      const fix = delta > drift ? drift : delta - 1n;
      current -= fix * count;
      delta -= fix;
    }
    duration += delta * count;
    frames += count;
  }
  if (!(timescale > 0) || frames <= 0n || duration <= 0n) return null;
  const [fpsNum, fpsDen] = reduceRational(BigInt(timescale) * frames, duration);
  return { trackIndex, handler, timescale, sampleCount: Number(frames), fpsNum, fpsDen };
}

/**
 * Timing of every track with an stts table, in `trak` order; [] when the file is not a
 * non-fragmented ISO-BMFF file this reader understands (never throws on bad data).
 */
export function readMp4Timings(file: string): Mp4TrackTiming[] {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return [];
  }
  try {
    const moov = readMoov(fd, fs.fstatSync(fd).size);
    if (!moov) return [];
    const top = boxes(moov, 0, moov.length);
    if (top.some((b) => b.type === 'mvex')) return []; // fragmented: samples live in moof/trun
    const out: Mp4TrackTiming[] = [];
    top.filter((b) => b.type === 'trak').forEach((trak, i) => {
      const t = trackTiming(moov, trak, i);
      if (t) out.push(t);
    });
    return out;
  } catch {
    return [];
  } finally {
    fs.closeSync(fd);
  }
}
