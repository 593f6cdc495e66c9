package apicheck

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The public packages' exported functions and methods take and return
// only types a program outside the module can name, and their exported
// types' fields have such types: no type of an internal package in a
// parameter, a result or an exported field. (Such a function can be
// called only with a value the module itself hands out; before this test,
// events.NewPublisher took a wire.Names.) Embedding an internal struct in
// an exported one stays allowed: its fields are promoted and usable.
func TestExportedSignaturesAvoidInternalTypes(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch {
			case rel == ".":
				return nil
			case strings.HasPrefix(d.Name(), "."), d.Name() == "internal", d.Name() == "testdata",
				rel == "examples", rel == "cmd", rel == "deploy", rel == "docs", rel == "scripts":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		checked++
		for _, bad := range internalTypesInSignatures(t, path) {
			t.Errorf("%s: %s", rel, bad)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked %d files: the walk missed the public packages", checked)
	}
}

// internalTypesInSignatures lists the exported functions, methods and
// types of one file whose parameters, results or exported fields name a
// type of an internal package.
func internalTypesInSignatures(t *testing.T, path string) []string {
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	internal := map[string]bool{} // local names of internal imports
	for _, im := range f.Imports {
		p, _ := strconv.Unquote(im.Path.Value)
		if !strings.Contains(p, "/internal/") && !strings.HasSuffix(p, "/internal") {
			continue
		}
		name := p[strings.LastIndex(p, "/")+1:]
		if im.Name != nil {
			name = im.Name.Name
		}
		internal[name] = true
	}
	if len(internal) == 0 {
		return nil
	}
	var out []string
	find := func(what string, typ ast.Node) {
		ast.Inspect(typ, func(n ast.Node) bool {
			switch x := n.(type) {
			case *ast.StructType: // exported, non-embedded fields only
				for _, field := range x.Fields.List {
					for _, name := range field.Names {
						if name.IsExported() {
							ast.Inspect(field.Type, func(n ast.Node) bool { return inspectSel(n, internal, what+"."+name.Name, &out) })
							break
						}
					}
				}
				return false
			}
			return inspectSel(n, internal, what, &out)
		})
	}
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if d.Name.IsExported() && (d.Recv == nil || exportedRecv(d.Recv)) {
				find(d.Name.Name, d.Type)
			}
		case *ast.GenDecl:
			for _, spec := range d.Specs {
				if ts, ok := spec.(*ast.TypeSpec); ok && ts.Name.IsExported() {
					find(ts.Name.Name, ts.Type)
				}
			}
		}
	}
	return out
}

// inspectSel records a selector naming a type of an internal package.
func inspectSel(n ast.Node, internal map[string]bool, what string, out *[]string) bool {
	sel, ok := n.(*ast.SelectorExpr)
	if !ok {
		return true
	}
	if id, ok := sel.X.(*ast.Ident); ok && internal[id.Name] {
		*out = append(*out, what+" uses "+id.Name+"."+sel.Sel.Name)
	}
	return false
}

// exportedRecv: the method's receiver type is exported.
func exportedRecv(recv *ast.FieldList) bool {
	if len(recv.List) == 0 {
		return false
	}
	typ := recv.List[0].Type
	for {
		switch x := typ.(type) {
		case *ast.StarExpr:
			typ = x.X
		case *ast.IndexExpr:
			typ = x.X
		case *ast.IndexListExpr:
			typ = x.X
		case *ast.Ident:
			return x.IsExported()
		default:
			return false
		}
	}
}
