// The web page of `vlm serve`: plain JS, no build step. Talks to /v1/chat/completions with
// stream: true and renders the SSE deltas; keeps the conversation (multi-turn) in `history`.
'use strict';
const $ = (id) => document.getElementById(id);
const history = []; // OpenAI messages sent so far
let pending = []; // media parts for the next user message: {type, url, mime}
let controller = null;

function headers() {
  const h = { 'content-type': 'application/json' };
  const key = $('apiKey').value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

function setStatus(text) {
  $('status').textContent = text;
}

async function loadModels() {
  try {
    const r = await fetch('v1/models', { headers: headers() });
    const j = await r.json();
    if (!r.ok) throw new Error(j.error ? j.error.message : r.statusText);
    $('model').innerHTML = '';
    for (const m of j.data) {
      const o = document.createElement('option');
      o.value = m.id;
      o.textContent = m.family ? `${m.id} (${m.family})` : m.id;
      $('model').appendChild(o);
    }
    setStatus('ready');
  } catch (e) {
    setStatus(`could not list the models: ${e.message}`);
  }
}

function addFile(file) {
  if (!file || !/^(image|video)\//.test(file.type)) {
    setStatus(`not an image or video: ${file ? file.name : '?'}`);
    return;
  }
  const reader = new FileReader();
  reader.onload = () => {
    pending.push({ kind: file.type.startsWith('video/') ? 'video' : 'image', url: reader.result });
    renderPreview();
  };
  reader.readAsDataURL(file);
}

function mediaElement(p) {
  const el = document.createElement(p.kind === 'video' ? 'video' : 'img');
  el.src = p.url;
  if (p.kind === 'video') el.controls = true;
  return el;
}

function renderPreview() {
  const box = $('preview');
  box.innerHTML = '';
  for (const p of pending) box.appendChild(mediaElement(p));
}

function addMessage(role, text, media) {
  const div = document.createElement('div');
  div.className = `msg ${role}`;
  for (const p of media || []) div.appendChild(mediaElement(p));
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  div.appendChild(span);
  $('history').appendChild(div);
  return span;
}

async function send(prompt) {
  const content = pending.map((p) => (p.kind === 'video'
    ? { type: 'video_url', video_url: { url: p.url } }
    : { type: 'image_url', image_url: { url: p.url } }));
  content.push({ type: 'text', text: prompt });
  const userMsg = { role: 'user', content };
  addMessage('user', prompt, pending);
  pending = [];
  renderPreview();
  const out = addMessage('assistant', '');
  out.parentElement.id = 'answer';
  const body = { model: $('model').value, messages: [...history, userMsg], stream: true, stream_options: { include_usage: true } };
  const maxTokens = parseInt($('maxTokens').value, 10);
  if (maxTokens > 0) body.max_tokens = maxTokens;
  const t = $('temperature').value.trim();
  if (t !== '') body.temperature = Number(t);
  controller = new AbortController();
  $('send').disabled = true;
  $('stop').disabled = false;
  setStatus('generating…');
  let answer = '';
  let finish = null;
  try {
    const r = await fetch('v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!r.ok) {
      const j = await r.json().catch(() => ({}));
      throw new Error(j.error ? j.error.message : `HTTP ${r.status}`);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 2);
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') continue;
        const j = JSON.parse(data);
        if (j.error) throw new Error(j.error.message);
        const c = j.choices && j.choices[0];
        if (c && c.delta && c.delta.content) {
          answer += c.delta.content;
          out.textContent = answer;
        }
        if (c && c.finish_reason) finish = c.finish_reason;
        if (j.usage) setStatus(`done (${finish}): ${j.usage.completion_tokens} tokens`);
      }
    }
    history.push(userMsg, { role: 'assistant', content: answer });
    if (!finish) setStatus('done');
  } catch (e) {
    if (e.name === 'AbortError') {
      setStatus('stopped');
      history.push(userMsg, { role: 'assistant', content: answer });
    } else {
      out.parentElement.className = 'msg error';
      out.textContent = `error: ${e.message}`;
      setStatus('error');
    }
  } finally {
    out.parentElement.removeAttribute('id');
    out.parentElement.dataset.done = '1';
    controller = null;
    $('send').disabled = false;
    $('stop').disabled = true;
  }
}

$('form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const prompt = $('prompt').value.trim();
  if (!prompt || controller) return;
  $('prompt').value = '';
  send(prompt);
});
$('stop').addEventListener('click', () => controller && controller.abort());
$('clear').addEventListener('click', () => {
  history.length = 0;
  pending = [];
  renderPreview();
  $('history').innerHTML = '';
  setStatus('ready');
});
$('file').addEventListener('change', (ev) => {
  for (const f of ev.target.files) addFile(f);
  ev.target.value = '';
});
const drop = $('drop');
drop.addEventListener('dragover', (ev) => {
  ev.preventDefault();
  drop.classList.add('over');
});
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (ev) => {
  ev.preventDefault();
  drop.classList.remove('over');
  for (const f of ev.dataTransfer.files) addFile(f);
});
document.addEventListener('paste', (ev) => {
  for (const item of ev.clipboardData.items) if (item.kind === 'file') addFile(item.getAsFile());
});
$('apiKey').addEventListener('change', loadModels);
loadModels();
