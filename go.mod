module hpcrun

go 1.26
