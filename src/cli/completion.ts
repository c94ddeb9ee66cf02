// `cowshed completion bash|zsh`: a completion script made from the command
// tree itself (commands, aliases, options, option values), so it never lags
// behind the commands. Commands and options complete from the tree; an
// option's value completes from its choices, or as a directory or file when
// its placeholder says so; anything else completes as a file name.
import type { Command, Option } from 'commander';
import { CowshedError } from '../util/errors.ts';

interface Tables {
  /** command path ('.' for the top) → its subcommand names and aliases */
  subs: Map<string, string[]>;
  /** command path → its option flags */
  opts: Map<string, string[]>;
  /** 'path|flag' → what its value is: choices, or _dirs / _files / _none */
  vals: Map<string, string>;
  /** 'path|alias' → the command's own name */
  aliases: Map<string, string>;
}

function valueKind(o: Option): string | undefined {
  if (!o.required && !o.optional) return undefined; // a flag without a value
  if (o.argChoices?.length) return o.argChoices.join(' ');
  const ph = o.flags.match(/[<[]([^>\]]+)[>\]]/)?.[1]?.toLowerCase() ?? '';
  if (/dir/.test(ph)) return '_dirs';
  if (/file|path|key|cert/.test(ph)) return '_files';
  // An optional value (--tls-verify [bool]) is written --flag=value: the next word is not its value.
  return o.optional ? undefined : '_none';
}

function tables(program: Command): Tables {
  const t: Tables = { subs: new Map(), opts: new Map(), vals: new Map(), aliases: new Map() };
  const walk = (c: Command, path: string): void => {
    const opts: string[] = [];
    for (const o of c.options as readonly Option[]) {
      if (o.hidden) continue;
      for (const f of [o.short, o.long]) {
        if (!f) continue;
        opts.push(f);
        const k = valueKind(o);
        if (k) t.vals.set(`${path}|${f}`, k);
      }
    }
    opts.push('-h', '--help');
    t.opts.set(path, opts);
    const subs: string[] = [];
    for (const s of c.commands) {
      if ((s as Command & { _hidden?: boolean })._hidden) continue;
      subs.push(s.name(), ...s.aliases());
      for (const a of s.aliases()) t.aliases.set(`${path}|${a}`, s.name());
      walk(s, path === '.' ? s.name() : `${path} ${s.name()}`);
    }
    if (c.commands.length) subs.push('help');
    if (subs.length) t.subs.set(path, [...new Set(subs)]);
  };
  walk(program, '.');
  return t;
}

/** Quote for a single-quoted shell word (bash and zsh alike). */
const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
const assoc = (m: Map<string, string[] | string>): string =>
  [...m].map(([k, v]) => `    [${q(k)}]=${q(Array.isArray(v) ? v.join(' ') : v)}`).join('\n');

function bash(t: Tables): string {
  return `# bash completion for cowshed. Load it with
#   eval "$(cowshed completion bash)"
# or save it as /etc/bash_completion.d/cowshed.
_cowshed() {
  local cur=\${COMP_WORDS[COMP_CWORD]} prev=\${COMP_WORDS[COMP_CWORD-1]} cpath=. w i
  local -A subs=(
${assoc(t.subs)}
  )
  local -A opts=(
${assoc(t.opts)}
  )
  local -A vals=(
${assoc(t.vals)}
  )
  local -A aliases=(
${assoc(t.aliases)}
  )
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=\${COMP_WORDS[i]}
    if [[ -n \${vals["$cpath|$w"]+x} ]]; then ((i++)); continue; fi
    [[ $w == -* ]] && continue
    [[ -n \${aliases["$cpath|$w"]+x} ]] && w=\${aliases["$cpath|$w"]}
    if [[ " \${subs[$cpath]} " == *" $w "* && $w != help ]]; then
      if [[ $cpath == . ]]; then cpath=$w; else cpath="$cpath $w"; fi
    fi
  done
  if [[ -n \${vals["$cpath|$prev"]+x} ]]; then
    case \${vals["$cpath|$prev"]} in
      _dirs) COMPREPLY=($(compgen -d -- "$cur")) ;;
      _files) COMPREPLY=($(compgen -f -- "$cur")) ;;
      _none) COMPREPLY=() ;;
      *) COMPREPLY=($(compgen -W "\${vals["$cpath|$prev"]}" -- "$cur")) ;;
    esac
    return 0
  fi
  if [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "\${opts[$cpath]}" -- "$cur"))
  elif [[ -n \${subs[$cpath]+x} ]]; then
    COMPREPLY=($(compgen -W "\${subs[$cpath]}" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
  return 0
}
complete -o filenames -F _cowshed cowshed
`;
}

function zsh(t: Tables): string {
  return `#compdef cowshed
# zsh completion for cowshed. Save it as _cowshed in a directory of $fpath
#   cowshed completion zsh > "\${fpath[1]}/_cowshed"
# or load it in this shell (after compinit) with
#   eval "$(cowshed completion zsh)"
_cowshed() {
  local cur=\${words[CURRENT]} prev=\${words[CURRENT-1]} cpath=. w i
  local -A subs opts vals aliases
  subs=(
${assoc(t.subs).replace(/^ {4}\[('[^']*')\]=/gm, '    $1 ')}
  )
  opts=(
${assoc(t.opts).replace(/^ {4}\[('[^']*')\]=/gm, '    $1 ')}
  )
  vals=(
${assoc(t.vals).replace(/^ {4}\[('[^']*')\]=/gm, '    $1 ')}
  )
  aliases=(
${assoc(t.aliases).replace(/^ {4}\[('[^']*')\]=/gm, '    $1 ')}
  )
  for ((i = 2; i < CURRENT; i++)); do
    w=\${words[i]}
    if (( \${+vals[$cpath|$w]} )); then ((i++)); continue; fi
    [[ $w == -* ]] && continue
    (( \${+aliases[$cpath|$w]} )) && w=\${aliases[$cpath|$w]}
    if [[ " \${subs[$cpath]} " == *" $w "* && $w != help ]]; then
      if [[ $cpath == . ]]; then cpath=$w; else cpath="$cpath $w"; fi
    fi
  done
  if (( \${+vals[$cpath|$prev]} )); then
    case \${vals[$cpath|$prev]} in
      _dirs) _files -/ ;;
      _files) _files ;;
      _none) ;;
      *) compadd -- \${=vals[$cpath|$prev]} ;;
    esac
    return
  fi
  if [[ $cur == -* ]]; then
    compadd -- \${=opts[$cpath]}
  elif (( \${+subs[$cpath]} )); then
    compadd -- \${=subs[$cpath]}
  else
    _files
  fi
}
if [[ \${funcstack[1]} == _cowshed ]]; then
  _cowshed "$@"
else
  compdef _cowshed cowshed
fi
`;
}

export function completionScript(program: Command, shell: string): string {
  if (shell === 'bash') return bash(tables(program));
  if (shell === 'zsh') return zsh(tables(program));
  throw new CowshedError('EINVAL', `completion: no script for ${JSON.stringify(shell)}; the shells are bash and zsh`);
}
