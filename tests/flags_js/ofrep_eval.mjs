// Evaluate grayshift's release flag with the OpenFeature JavaScript server
// SDK and its OFREP provider, as a worker would (tests/flags.rs drives this).
//
//   node ofrep_eval.mjs BASE_URL TOKEN FLAG USERS_FILE
//
// Each line read on stdin asks for one round: every user in USERS_FILE (one
// a line) is evaluated, and one JSON line is printed: [[value, variant, reason], ...].
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const [baseUrl, token, flag, usersFile] = process.argv.slice(2);
const users = readFileSync(usersFile, 'utf8').split('\n').map((u) => u.trim()).filter(Boolean);

await OpenFeature.setProviderAndWait(
  new OFREPProvider({ baseUrl, headersFactory: () => [['Authorization', `Bearer ${token}`]] }),
);
const client = OpenFeature.getClient();

async function evaluate(user) {
  const details = await client.getBooleanDetails(flag, false, { targetingKey: user });
  return [details.value, details.variant ?? null, details.reason];
}

for await (const _line of createInterface({ input: process.stdin })) {
  const answers = [];
  // A few requests at a time: the order of the answers is the users' order.
  for (let i = 0; i < users.length; i += 32) {
    answers.push(...(await Promise.all(users.slice(i, i + 32).map(evaluate))));
  }
  process.stdout.write(JSON.stringify(answers) + '\n');
}
await OpenFeature.close();
