/**
 * critest against a fresh berth, by hand (as root, after a build):
 *
 *   node dist/test/critest/run.js [--benchmark] [--critest PATH] [--focus RE]... [--skip RE]...
 *                                 [--keep] [-- critest args...]
 *
 * critest comes from --critest, $CRITEST or PATH. Prints critest's output, then
 * the counts, the failed specs and anything left behind; exits 1 if a spec
 * failed or something was left behind, 2 when there is no critest.
 */
import { DEFAULT_SKIPS, findCritest, formatSummary, runCritest } from './harness.js';

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  let critest = findCritest();
  let benchmark = false;
  let keep = false;
  const focus: string[] = [];
  const skip: string[] = [];
  const extraArgs: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      extraArgs.push(...argv.slice(i + 1));
      break;
    } else if (a === '--benchmark') benchmark = true;
    else if (a === '--keep') keep = true;
    else if (a === '--critest') critest = argv[++i];
    else if (a === '--focus') focus.push(argv[++i]);
    else if (a === '--skip') skip.push(argv[++i]);
    else {
      console.error(`run: unknown argument ${a}`);
      return 2;
    }
  }
  if (!critest) {
    console.error('run: no critest (set CRITEST, put it on PATH or pass --critest PATH)');
    return 2;
  }
  const result = await runCritest({
    critest,
    benchmark,
    keep,
    focus,
    skip: [...DEFAULT_SKIPS, ...skip],
    extraArgs,
    echo: process.stdout,
  });
  console.log(`\n${formatSummary(result)}`);
  if (keep) console.log(`\nwork directory kept: ${result.workDir}`);
  return result.failed.length === 0 && result.leftovers.length === 0 && result.exitCode === 0 ? 0 : 1;
}

process.exitCode = await main();
