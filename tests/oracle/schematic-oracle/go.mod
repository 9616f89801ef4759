module bootfactory.test/schematic-oracle

go 1.19

require gopkg.in/yaml.v3 v3.0.1

// Use the Debian-packaged copy of go-yaml v3.0.1 (golang-gopkg-yaml.v3-dev);
// the build must work fully offline (GOPROXY=off).
replace gopkg.in/yaml.v3 => /usr/share/gocode/src/gopkg.in/yaml.v3
