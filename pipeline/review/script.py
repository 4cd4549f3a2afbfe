"""The review page's script (plain JavaScript, no library, nothing fetched).

It keeps one verdict per card (the latest click), in ``localStorage`` too so that a reload keeps
them; each verdict is POSTed to ``verdicts`` when the page is served over HTTP (``xmodal review
serve``) and the whole set downloads as JSONL from the page opened from disk. A verdict needs the
reviewer's name. Keys: ``a`` agree, ``d`` disagree (then the next card), ``n`` the note,
``j``/``k`` next/previous card, ``Escape`` leaves a text field. A segment's audio plays in step
with its video; a chapter button seeks both.
"""

SCRIPT = r"""
(function () {
  'use strict';
  const meta = JSON.parse(document.getElementById('review-meta').textContent);
  const cards = Array.from(document.querySelectorAll('section.sample'));
  const byKey = new Map(cards.map(c => [c.dataset.key, c]));
  const storeKey = 'xmodal-review/' + meta.dataset + '/' + meta.version + '/' + meta.seed;
  const nameBox = document.getElementById('reviewer');
  const statusBox = document.getElementById('status');
  let state = {};
  let current = 0;
  const served = location.protocol === 'http:' || location.protocol === 'https:';

  function load() {
    try { state = JSON.parse(localStorage.getItem(storeKey) || '{}') || {}; } catch (e) { state = {}; }
    for (const key of Object.keys(state)) { if (!byKey.has(key)) delete state[key]; }
    const last = Object.values(state).map(v => v.reviewer).pop();
    if (last && !nameBox.value) nameBox.value = last;
  }
  function save() { try { localStorage.setItem(storeKey, JSON.stringify(state)); } catch (e) { /* private mode */ } }
  function say(text) { statusBox.textContent = text; }
  function progress() {
    document.getElementById('progress').textContent = Object.keys(state).length + ' / ' + cards.length + ' judged';
  }
  function show(card) {
    const v = state[card.dataset.key];
    card.classList.toggle('agreed', !!v && v.verdict === 'agree');
    card.classList.toggle('disagreed', !!v && v.verdict === 'disagree');
    card.querySelector('span.state').textContent = v ? v.verdict + ' (' + v.reviewer + ')' : '';
    if (v) {
      card.querySelector('input.verdict-note').value = v.note || '';
      const code = card.querySelector('select.code');
      if (code) code.value = v.code || '';
    }
    progress();
  }
  function focusCard(i) {
    if (!cards.length) return;
    current = Math.max(0, Math.min(cards.length - 1, i));
    cards.forEach((c, j) => c.classList.toggle('current', j === current));
    cards[current].focus({preventScroll: true});
    cards[current].scrollIntoView({block: 'start'});
  }
  function post(records) {
    if (!served) return;
    fetch('verdicts', {method: 'POST', headers: {'Content-Type': 'application/x-ndjson'},
                       body: records.map(r => JSON.stringify(r)).join('\n') + '\n'})
      .then(r => r.json().then(body => say(r.ok ? 'saved on the server (' + body.total + ' verdicts)'
                                                : 'the server refused it: ' + body.error)))
      .catch(() => say('the server is not reachable: download the verdicts instead'));
  }
  function judge(card, verdict) {
    const reviewer = nameBox.value.trim();
    if (!reviewer) { say('enter your name first'); nameBox.focus(); return false; }
    const code = card.querySelector('select.code');
    const record = {
      format: meta.verdict_format, dataset: meta.dataset, version: meta.version, seed: meta.seed,
      key: card.dataset.key, id: card.dataset.id, kind: card.dataset.kind, check: card.dataset.check,
      stratum: card.dataset.stratum, verdict: verdict,
      code: verdict === 'disagree' && code && code.value ? code.value : null,
      reviewer: reviewer, note: card.querySelector('input.verdict-note').value, at: new Date().toISOString()};
    state[card.dataset.key] = record;
    save(); show(card); post([record]);
    return true;
  }
  function jsonl() {
    const rows = cards.map(c => state[c.dataset.key]).filter(Boolean);
    return rows.map(r => JSON.stringify(r)).join('\n') + (rows.length ? '\n' : '');
  }
  function download() {
    const blob = new Blob([jsonl()], {type: 'application/x-ndjson'});
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'verdicts-' + meta.dataset + '-' + meta.version + '-' +
      (nameBox.value.trim() || 'anonymous').replace(/[^A-Za-z0-9_.-]+/g, '_') + '.jsonl';
    document.body.appendChild(a); a.click(); a.remove();
    say('downloaded ' + Object.keys(state).length + ' verdicts');
  }

  cards.forEach((card, i) => {
    card.addEventListener('click', () => {
      current = i;
      cards.forEach((c, j) => c.classList.toggle('current', j === i));
    });
    card.querySelectorAll('button[data-verdict]').forEach(b => b.addEventListener('click', ev => {
      ev.stopPropagation(); current = i; judge(card, b.dataset.verdict);
    }));
    const note = card.querySelector('input.verdict-note');
    note.addEventListener('change', () => {
      const v = state[card.dataset.key];
      if (v && v.note !== note.value) judge(card, v.verdict);
    });
    const video = card.querySelector('video.segment'), audio = card.querySelector('audio.segment-audio');
    if (video && audio) {
      video.addEventListener('play', () => { audio.currentTime = video.currentTime; audio.play().catch(() => {}); });
      video.addEventListener('pause', () => audio.pause());
      video.addEventListener('seeked', () => { audio.currentTime = video.currentTime; });
    }
    card.querySelectorAll('button.seek').forEach(b => b.addEventListener('click', ev => {
      ev.stopPropagation();
      if (video) video.currentTime = parseFloat(b.dataset.seek);
      if (audio) audio.currentTime = parseFloat(b.dataset.seek);
    }));
    show(card);
  });
  document.getElementById('download').addEventListener('click', download);
  document.addEventListener('keydown', ev => {
    const t = ev.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.tagName === 'SELECT')) {
      if (ev.key === 'Escape') { t.blur(); cards[current] && cards[current].focus({preventScroll: true}); }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !cards.length) return;
    const card = cards[current];
    if (ev.key === 'a' || ev.key === 'd') {
      if (judge(card, ev.key === 'a' ? 'agree' : 'disagree')) focusCard(current + 1);
    } else if (ev.key === 'j' || ev.key === 'ArrowDown') { focusCard(current + 1); }
    else if (ev.key === 'k' || ev.key === 'ArrowUp') { focusCard(current - 1); }
    else if (ev.key === 'n') { card.querySelector('input.verdict-note').focus(); }
    else return;
    ev.preventDefault();
  });
  load();
  cards.forEach(show);
  focusCard(0);
  window.xmodalReview = {jsonl: jsonl, state: () => state, judge: judge};
})();
"""
