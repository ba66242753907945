// llama.cpp as the benchmark peer of `vlm bench --model … --llamacpp FILE.gguf` (from ../shared/tools/llamacpp/bench_llamacpp.mjs).
// node-llama-cpp (pinned 3.21.1) timing of one GGUF: prefill-N and decode@ctx, CPU only, mmap on.
// usage: node run.mjs FILE.gguf [--reps 3] [--prefill 512] [--ctx 1024] [--decode 64] [--threads 2] [--skip-prefill] [--serve]
// Prints one JSON line. One model per process so VmHWM is per model.
// --serve (for `vlm bench --interleave`): after the NCTX−1 prompt, prints {"ready": true, ...} and then, for
// each line "decode" read on stdin, runs one decode round and prints {"ms", "tokPerS"}; "quit" or end of
// input prints the summary line and exits. The caller alternates these rounds with its own.
import fs from "node:fs";
import {getLlama} from "node-llama-cpp";

const args = process.argv.slice(2);
const file = args[0];
const opt = (k, d) => { const i = args.indexOf(k); return i >= 0 ? Number(args[i + 1]) : d; };
const THREADS = opt("--threads", 2), REPS = opt("--reps", 3), NPRE = opt("--prefill", 512), NCTX = opt("--ctx", 1024), NDEC = opt("--decode", 64);
const serve = args.includes("--serve");
const skipPrefill = serve || args.includes("--skip-prefill");
const loadavg = () => fs.readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ");
const status = () => Object.fromEntries(fs.readFileSync("/proc/self/status", "utf8").split("\n")
    .filter(l => /^(VmHWM|VmRSS|RssAnon|RssFile)/.test(l)).map(l => { const [k, v] = l.split(":"); return [k, parseInt(v) / 1024]; }));
const now = () => Number(process.hrtime.bigint()) / 1e6;
const cpuMs = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
// cpuShare = process CPU time / (wall * 2 threads): < 1 means other processes took cores from us

let seed = 12345;
const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed; };

const llama = await getLlama({gpu: false, build: "never", maxThreads: 0, logLevel: "error"});
let t0 = now();
const model = await llama.loadModel({modelPath: file, gpuLayers: 0, useMmap: true});
const loadMs = now() - t0;
const vocab = model.fileInfo.metadata?.[model.fileInfo.metadata.general.architecture]?.vocab_size
    ?? model.tokens.ggufVocabSize ?? 32000;
const randTokens = n => Array.from({length: n}, () => 100 + (rnd() % (vocab - 300)));
const context = await model.createContext({contextSize: 2048, batchSize: 512, threads: THREADS, sequences: 1});
const seq = context.getSequence();
const out = {file, fileBytes: fs.statSync(file).size, llamaCpp: llama.llamaCppRelease, nodeLlamaCpp: "3.21.1",
    cpuBackend: llama.systemInfo.trim(), threads: context.currentThreads, batchSize: context.batchSize,
    contextSize: context.contextSize, flashAttention: context.flashAttention, vocab, loadMs,
    prefill: [], decode: []};

// prefill: NPRE-token prompt, logits for the last token (as when generating the first token)
async function prefill(n, withProbs = false) {
    await seq.clearHistory();
    const toks = randTokens(n);
    const items = toks.map((t, i) => i === n - 1 ? [t, {generateNext: withProbs ? {probabilities: true} : {token: true}}] : t);
    const s = now();
    const res = await seq.controlledEvaluate(items);
    return {ms: now() - s, last: res[n - 1]};
}
// NaN / finiteness check + warm-up (touches all weights)
{
    const {ms, last} = await prefill(NPRE, true);
    const probs = [...(last?.next?.probabilities?.values?.() ?? [])];
    out.warmupPrefillMs = ms;
    out.firstLogitsFinite = probs.length > 0 && probs.every(Number.isFinite);
    out.nProbs = probs.length; out.nextToken = last?.next?.token;
}
if (!skipPrefill) for (let r = 0; r < REPS; r++) {
    const la = loadavg(), c0 = cpuMs();
    const {ms} = await prefill(NPRE);
    out.prefill.push({ms, tokPerS: NPRE * 1000 / ms, loadavg: la, cpuShare: (cpuMs() - c0) / ms / THREADS});
}
// decode@NCTX: NCTX-1 prompt tokens, then the NCTX-th token starts NDEC single-token greedy steps
await seq.clearHistory();
t0 = now();
await seq.evaluateWithoutGeneratingNewTokens(randTokens(NCTX - 1));
out.ctxPromptMs = now() - t0;
const lastTok = randTokens(1);
async function decodeRound() {   // back to NCTX−1 cached positions, then NDEC greedy steps
    await seq.eraseContextTokenRanges([{start: NCTX - 1, end: seq.nextTokenIndex}]);
    const la = loadavg(), c0 = cpuMs();
    const s = now();
    let n = 0;
    for await (const tok of seq.evaluate(lastTok, {temperature: 0})) { if (++n >= NDEC) break; }
    const ms = now() - s;
    const r = {ms, tokPerS: NDEC * 1000 / ms, msPerTok: ms / NDEC, loadavg: la, cpuShare: (cpuMs() - c0) / ms / THREADS, ctxEnd: seq.nextTokenIndex};
    out.decode.push(r);
    return r;
}
if (serve) {
    console.log(JSON.stringify({ready: true, ...out, mem: status()}));
    const {createInterface} = await import("node:readline");
    for await (const line of createInterface({input: process.stdin})) {
        const cmd = line.trim();
        if (cmd === "quit") break;
        if (cmd === "decode") console.log(JSON.stringify(await decodeRound()));
        else if (cmd) console.log(JSON.stringify({error: `unknown command ${JSON.stringify(cmd)} (decode | quit)`}));
    }
} else for (let r = 0; r < REPS; r++) await decodeRound();   // weights already warm from the prompt
out.prefillBest = out.prefill.length ? Math.min(...out.prefill.map(x => x.ms)) : null;
out.prefillTokPerS = out.prefillBest ? NPRE * 1000 / out.prefillBest : null;
out.decodeBestMsPerTok = Math.min(...out.decode.map(x => x.msPerTok));
out.decodeTokPerS = 1000 / out.decodeBestMsPerTok;
out.mem = status();
console.log(JSON.stringify(out));
await context.dispose(); await model.dispose();
