// Unit tests of the history checker (checker.mjs) the reliability suites use: it must
// find silent loss, duplicates and reorders, and accept a gap the client was told of.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { checkAll, checkSubscriber, History, publicationN } from './checker.mjs';

test('the checker finds silent loss, duplicates and reorders, and accepts a told gap', () => {
  const pub = (n) => ({ name: 'publication', ctx: { data: { n } } });
  const told = { name: 'subscribed', ctx: { wasRecovering: true, recovered: false } };
  const recovered = { name: 'subscribed', ctx: { wasRecovering: true, recovered: true } };
  const first = { name: 'subscribed', ctx: { wasRecovering: false } };
  const check = (timeline, acked) => {
    const r = checkSubscriber(timeline, acked);
    return [r.silentLoss, r.duplicates, r.reorders, r.toldPairs];
  };
  assert.deepEqual(check([first, pub(1), pub(2), pub(3)], [1, 2, 3]), [0, 0, 0, 0]);
  assert.deepEqual(check([first, pub(1), pub(3)], [1, 2, 3]), [1, 0, 0, 0], 'a gap nobody told of');
  assert.deepEqual(check([first, pub(1), recovered, pub(3)], [1, 2, 3]), [1, 0, 0, 0], 'recovered: true is no excuse');
  assert.deepEqual(check([first, pub(1), told, pub(3)], [1, 2, 3]), [0, 0, 0, 1], 'told between the neighbours');
  assert.deepEqual(check([first, told, pub(1), pub(3)], [1, 2, 3]), [1, 0, 0, 0], 'told before, not between');
  assert.deepEqual(check([first, pub(1), told], [1, 2, 3]), [0, 0, 0, 2], 'the tail, told');
  assert.deepEqual(check([first, pub(1), pub(2), pub(2), pub(3)], [1, 2, 3]), [0, 1, 0, 0], 'a duplicate');
  assert.deepEqual(check([first, pub(2), pub(1), pub(3)], [1, 2, 3]), [0, 0, 1, 0], 'a reorder');
  assert.deepEqual(check([first, pub(1), pub(3)], [1, 3]), [0, 0, 0, 0], 'an unacknowledged publication may be missing');
});

test('checkAll sums per channel and prints the summary line', () => {
  const h = new History();
  for (const ch of ['a', 'b']) for (let i = 0; i < 3; i++) h.ack(ch, h.next(ch), { offset: i + 1, epoch: 'e', data: { n: i + 1 } });
  const log = (ns) => ({ entries: [{ name: 'subscribed', ctx: { wasRecovering: false } }, ...ns.map((n) => ({ name: 'publication', ctx: { data: { n } } }))] });
  const r = checkAll(h, [
    { label: 'x', channel: 'a', log: log([1, 2, 3]) },
    { label: 'y', channel: 'b', log: log([1, 3, 3]) },
  ]);
  assert.equal(r.line.split(' (')[0], 'publications=6 subscribers=2 silent_loss=1 duplicates=1 reorders=0 told=0');
  assert.equal(r.results[1].silentLoss, 1);
});

test('an unsubscribe tells the client', () => {
  const first = { name: 'subscribed', ctx: { wasRecovering: false } };
  const pub = (n) => ({ name: 'publication', ctx: { data: { n } } });
  const r = checkSubscriber([first, pub(1), { name: 'unsubscribed', ctx: { code: 2500 } }], [1, 2, 3]);
  assert.deepEqual([r.silentLoss, r.toldPairs], [0, 2]);
});

test('protobuf subscribers: the data arrives as the JSON bytes and is read the same', () => {
  const bytes = (n) => new TextEncoder().encode(JSON.stringify({ n }));
  const first = { name: 'subscribed', ctx: { wasRecovering: false } };
  const pub = (n) => ({ name: 'publication', ctx: { data: bytes(n) } });
  assert.equal(publicationN({ data: bytes(7) }), 7);
  assert.equal(publicationN({ data: { n: 7 } }), 7);
  const r = checkSubscriber([first, pub(1), pub(3), pub(3)], [1, 2, 3]);
  assert.deepEqual([r.silentLoss, r.duplicates, r.reorders], [1, 1, 0]);
});
