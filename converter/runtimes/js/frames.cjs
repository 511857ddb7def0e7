// The framed stdin/stdout protocol of the convert TF.js drivers (same framing as runner.cjs):
// a message is a 4-byte little-endian length, that many bytes of UTF-8 JSON header, then the raw
// bytes of the tensors the header lists in header.inputs / header.outputs ({dtype, shape, nbytes}).
'use strict';

class Reader {
  constructor(stream) {
    this.chunks = [];
    this.length = 0;
    this.waiter = null;
    this.ended = false;
    stream.on('data', (chunk) => { this.chunks.push(chunk); this.length += chunk.length; this.wake(); });
    stream.on('end', () => { this.ended = true; this.wake(); });
  }

  wake() {
    if (this.waiter) { const w = this.waiter; this.waiter = null; w(); }
  }

  async read(n) {
    while (this.length < n) {
      if (this.ended) return null;
      await new Promise((resolve) => { this.waiter = resolve; });
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.length = rest.length;
    return out;
  }
}

/** The next message {header, blobs}, or null when the stream has ended. */
async function readMessage(reader) {
  const head = await reader.read(4);
  if (head === null) return null;
  const body = await reader.read(head.readUInt32LE(0));
  if (body === null) throw new Error('stdin closed in the middle of a header');
  const header = JSON.parse(body.toString('utf8'));
  const blobs = [];
  for (const spec of header.inputs || []) {
    const bytes = await reader.read(spec.nbytes);
    if (bytes === null) throw new Error('stdin closed in the middle of a tensor');
    blobs.push(Buffer.from(bytes)); // own copy: the reader's buffer is reused
  }
  return { header, blobs };
}

function writeMessage(stream, header, buffers = []) {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32LE(json.length, 0);
  stream.write(Buffer.concat([head, json, ...buffers]));
}

module.exports = { Reader, readMessage, writeMessage };
