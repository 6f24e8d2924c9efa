// A backend behind wsgate, with the npm `ws` package.
//
// wsgate authenticates every client before the backend sees it and tells the backend who the
// client is in three request headers of the upstream handshake:
//   X-Wsgate-Subject    the token's `sub`
//   X-Wsgate-Scopes     its scopes, space-separated
//   X-Wsgate-Client-Ip  the client's address as the gateway saw it
// Clients cannot forge them: the gateway sends none of the client's headers upstream.
//
// This backend greets each connection with who it is talking to, then echoes every message.
//
//   cd examples/node && npm install && node upstream.js --listen 127.0.0.1:9000
'use strict';
const { WebSocketServer } = require('ws');

const i = process.argv.indexOf('--listen');
const listen = i > 0 ? process.argv[i + 1] : '127.0.0.1:9000';
const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];

const wss = new WebSocketServer({ host, port });
wss.on('listening', () => {
  const a = wss.address();
  console.log(`node upstream listening ws://${a.address}:${a.port}`);
});
wss.on('connection', (ws, req) => {
  const h = req.headers; // lower-case names
  const who = {
    hello: h['x-wsgate-subject'] || '',
    scopes: (h['x-wsgate-scopes'] || '').split(' ').filter(Boolean),
    client_ip: h['x-wsgate-client-ip'] || '',
    backend: 'node',
  };
  ws.send(JSON.stringify({ type: 'hello', payload: who }));
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
