#!/usr/bin/env bash
# Checks that every section citation ("docs/metrics.md §1.3", "docs/method-spec.md §0.2-0.3",
# "§2.1 and §3.1") resolves to a numbered heading of a document in this repository.
#
#   tools/check_doc_citations.sh          # exit status 1 and one line per problem if any
#
# - In code and config files (everything but Markdown) every "§" must belong to a citation that
#   names its document by its path from the repository root (docs/...). A bare "metrics.md §2"
#   or a "§" with no document is reported: the reader cannot tell which file is meant.
# - In Markdown files, citations of the form "FILE.md §N" are checked too (the path relative to
#   the citing file, or from the root when it starts with docs/); other "§" signs (contents
#   lines, a page's own sections) are left alone.
# A number resolves when the document has a heading "# N." / "## N.M ..." (any level), or a
# heading of a reserved range "## A–B." that contains N. Ranges "§A-B" need both ends.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

# A citation: a path ending in .md, then one or more section numbers joined by -, –, "," or "and".
num='[0-9]+(\.[0-9]+)*'
# Written with groups rather than brackets so that it also works byte-wise (LC_ALL=C): "§" and "–"
# are several bytes in UTF-8.
range_end="([ ]*(-|–)[ ]*(§)?${num})?"
cite_re="(docs/)?[A-Za-z0-9_./-]*\.md[ ]+§${num}${range_end}([ ]*(,|and)[ ]*§${num}${range_end})*"

problems=0
report() {
  echo "$1"
  problems=$((problems + 1))
}

# Number of "§" signs in $1.
count_signs() {
  { grep -o '§' <<<"$1" || true; } | wc -l
}

# Does document $1 have a heading numbered $2?
has_heading() {
  local doc=$1 number=$2 escaped
  escaped=${number//./\\.}
  grep -Eq "^#{1,6} ${escaped}\.?[[:space:]]" "$doc" && return 0
  # Reserved ranges such as "## 12–19. (reserved)" cover whole numbers only.
  [[ $number =~ ^[0-9]+$ ]] || return 1
  local line lo hi
  while IFS= read -r line; do
    [[ $line =~ ^#{1,6}\ ([0-9]+)(–|-)([0-9]+)\.?[[:space:]] ]] || continue
    lo=${BASH_REMATCH[1]}
    hi=${BASH_REMATCH[3]}
    ((number >= lo && number <= hi)) && return 0
  done < <(grep -E "^#{1,6} [0-9]+(–|-)[0-9]+" "$doc")
  return 1
}

check_file() {
  local file=$1 markdown=0 lineno text citations citation doc_path doc numbers n in_line in_cites
  [[ $file == *.md ]] && markdown=1
  while IFS=: read -r lineno text; do
    citations=$(grep -oE "$cite_re" <<<"$text" || true)
    if ((!markdown)); then
      in_line=$(count_signs "$text")
      in_cites=$(count_signs "$citations")
      if ((in_line != in_cites)); then
        report "$file:$lineno: a § citation names no document: ${text#"${text%%[![:space:]]*}"}"
      fi
    fi
    [[ -n $citations ]] || continue
    while IFS= read -r citation; do
      doc_path=${citation%%.md*}.md
      if [[ $doc_path == docs/* ]]; then
        doc=$doc_path
      elif ((markdown)); then
        doc=$(dirname "$file")/$doc_path
      else
        report "$file:$lineno: '$citation': give the document's path from the repository root (docs/$doc_path)"
        continue
      fi
      if [[ ! -f $doc ]]; then
        report "$file:$lineno: '$citation': no document $doc in this repository"
        continue
      fi
      numbers=$(grep -oE "${num}" <<<"${citation#*.md}")
      for n in $numbers; do
        has_heading "$doc" "$n" || report "$file:$lineno: '$citation': $doc has no heading numbered $n"
      done
    done <<<"$citations"
  done < <(grep -n '§' "$file" || true)
}

# Tracked and new files, without what git ignores (build folders).
while IFS= read -r -d '' file; do
  [[ -f $file && $file != tools/check_doc_citations.sh ]] || continue
  grep -Iq '§' "$file" 2>/dev/null || continue
  check_file "$file"
done < <(git ls-files -z --cached --others --exclude-standard)

if ((problems)); then
  echo "check_doc_citations: $problems problem(s)"
  exit 1
fi
echo "check_doc_citations: every § citation resolves"
