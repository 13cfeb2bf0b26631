// Sends the SDK tests' calls with Segment's Node SDK (@segment/analytics-node) to an Evothesis
// collector, paced over a few seconds (so a test can restart the collector while batches are
// in flight), then flushes and prints what was sent: {"sent": [messageId…], "failed": […]}.
//
//   EVOTHESIS_HOST=http://127.0.0.1:8000 EVOTHESIS_WRITE_KEY=wk_… ROUNDS=12 PACE_MS=50 \
//     node tests/sdks/send-node.mjs
import { Analytics } from '@segment/analytics-node'

const host = process.env.EVOTHESIS_HOST
const writeKey = process.env.EVOTHESIS_WRITE_KEY
const rounds = Number(process.env.ROUNDS ?? '1')
const pace = Number(process.env.PACE_MS ?? '0')

const analytics = new Analytics({
  writeKey,
  host,
  flushAt: 5,
  flushInterval: 100,
  maxRetries: 30,
  httpRequestTimeout: 10000,
})
const sent = []
const failed = []
const done = (err, ctx) => (err ? failed.push(String(err.message ?? err)) : sent.push(ctx.event.messageId))
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

for (let i = 0; i < rounds; i++) {
  analytics.track({ userId: `node-user-${i}`, event: 'Order Completed', properties: { total: 10 + i, currency: 'EUR' } }, done)
  analytics.page({ anonymousId: `node-anon-${i}`, name: 'Pricing', properties: { plan: 'pro' } }, done)
  analytics.screen({ anonymousId: `node-anon-${i}`, name: 'Settings' }, done)
  analytics.identify({ userId: `node-user-${i}`, anonymousId: `node-anon-${i}`, traits: { plan: 'pro', seats: i } }, done)
  analytics.group({ userId: `node-user-${i}`, groupId: 'acme', traits: { industry: 'retail' } }, done)
  analytics.alias({ userId: `node-user-${i}`, previousId: `node-anon-${i}` }, done)
  if (pace) await sleep(pace)
}
await analytics.closeAndFlush({ timeout: 120000 })
process.stdout.write(JSON.stringify({ sent, failed }))
