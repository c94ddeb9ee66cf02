// The global options of trust.ts's commands (--signature-policy,
// --registries.d), in a module of their own: they go before any command, so
// main.ts adds them even when it loads only the command that runs.
import { Option, type Command } from 'commander';

export const policyOption = (): Option => new Option('--signature-policy <file>', 'containers-policy.json to use (default ~/.config/containers/policy.json, then /etc/containers/policy.json)');
export const registriesDOption = (): Option => new Option('--registries.d <dir>', 'registries.d directory (default /etc/containers/registries.d)');

export function trustGlobalOptions(program: Command): void {
  program.addOption(policyOption()).addOption(registriesDOption());
}
