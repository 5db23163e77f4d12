// The hash routes: #/overview, #/channels, #/channel/<name>, #/users, #/keys.

const PLAIN = ['overview', 'channels', 'users', 'keys'];

/** The hash of a channel's page; the name is %-encoded, so any channel name fits. */
export function channelHash(channel) {
  return `#/channel/${encodeURIComponent(channel)}`;
}

/** { name } of the page `hash` names ({ name: 'channel', channel } for a channel); overview by default. */
export function parseRoute(hash) {
  const path = hash.replace(/^#\/?/, '');
  if (path.startsWith('channel/')) {
    const raw = path.slice('channel/'.length);
    let channel = raw;
    try {
      channel = decodeURIComponent(raw);
    } catch {
      // not %-encoded: take it as it is
    }
    return { name: 'channel', channel };
  }
  return { name: PLAIN.includes(path) ? path : 'overview' };
}
